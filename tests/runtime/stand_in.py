"""A stand-in refitter for unit tests of `prepare`'s orchestration (the cache, its key, its
lock): this host has no GPU, and a real refit needs one (tests/gpu/ runs the real one)."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


def stand_in_full_engine(engine: Path, onnx: Path) -> bytes:
    """What the stand-in "refits" to: depends on both inputs, so tests can check each."""
    return b"FULL:" + engine.read_bytes() + hashlib.sha256(onnx.read_bytes()).digest()


@dataclass
class StandInRefitter:
    invalid_reason: str | None = None
    delay: float = 0.0
    log: Path | None = None
    """Appends one line per refit: counts refits across processes."""
    calls: list[tuple[Path, Path]] = field(default_factory=list)

    def refit(self, engine: Path, onnx: Path) -> bytes:
        time.sleep(self.delay)
        self.calls.append((engine, onnx))
        if self.log is not None:
            with self.log.open("a", encoding="utf-8") as out:
                out.write(f"{os.getpid()} {engine.name}\n")
        return stand_in_full_engine(engine, onnx)

    def invalid(self, blob: bytes | memoryview) -> str | None:
        return self.invalid_reason
