"""Local record of files this machine has already hashed: size, mtime_ns and sha256.

Lets a no-op build trust a file by `stat` alone instead of hashing it. Kept inside the output
folder (`.rtx-matrix/stamps.json`) and never checked in: a clone or another machine has other
mtimes, so its first run hashes once and then trusts the stamps too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from matrix.atomic import write_atomic

STATE_DIR = ".rtx-matrix"
STAMPS_FILE = "stamps.json"


@dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int
    sha256: str


def state_dir(output: Path) -> Path:
    return output / STATE_DIR


class Stamps:
    """Keyed by absolute path; saved only when something changed."""

    def __init__(self, file: Path, stamps: dict[str, Stamp] | None = None) -> None:
        self.file = file
        self._stamps: dict[str, Stamp] = stamps or {}
        self._dirty = False

    @classmethod
    def load(cls, output: Path) -> Stamps:
        """The stamps of `output`; an unreadable or foreign state file counts as empty."""
        file = state_dir(output) / STAMPS_FILE
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            stamps = {key: Stamp(int(v[0]), int(v[1]), str(v[2])) for key, v in raw.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            stamps = {}
        return cls(file, stamps)

    def unchanged(self, path: Path) -> Stamp | None:
        """The stamp of `path` when the file still has its size and mtime, else None."""
        known = self._stamps.get(str(path))
        if known is None:
            return None
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return known if (stat.st_size, stat.st_mtime_ns) == (known.size, known.mtime_ns) else None

    def matches(self, path: Path, size: int, sha256: str) -> bool:
        """Whether the file at `path` stat-matches a stamp with this size and sha256."""
        known = self.unchanged(path)
        return known is not None and known.size == size and known.sha256 == sha256

    def record(self, path: Path, sha256: str, stat: os.stat_result | None = None) -> None:
        stat = stat or path.stat()
        stamp = Stamp(stat.st_size, stat.st_mtime_ns, sha256)
        if self._stamps.get(str(path)) != stamp:
            self._stamps[str(path)] = stamp
            self._dirty = True

    def forget(self, path: Path) -> None:
        if self._stamps.pop(str(path), None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write atomically when changed; losing it only costs a re-hash, so no fsync."""
        if not self._dirty:
            return
        data = {key: [s.size, s.mtime_ns, s.sha256] for key, s in sorted(self._stamps.items())}
        write_atomic(self.file, json.dumps(data, separators=(",", ":")), durable=False)
        self._dirty = False
