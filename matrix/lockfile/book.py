"""The lock being written by a build: its header, one entry per built cell, and when to
write it to disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from matrix import __version__
from matrix.lockfile.fingerprint import build_options, plan_identity
from matrix.lockfile.freshness import relative_posix
from matrix.lockfile.io import EntryCache, lock_to_json
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, LockEntry, ModelRef

if TYPE_CHECKING:
    from matrix.build.executor import CellTask
    from matrix.build.messages import BuildResult
    from matrix.facts.types import ModelFacts
    from matrix.gpu import Gpu
    from matrix.plan.types import Cell, Plan



def lock_header(
    plan: Plan,
    lock_path: Path,
    installed: str,
    shard: str | None = None,
    known: Mapping[str, str] | None = None,
) -> Lock:
    """A lock with no engines, for `plan` (`known`: fingerprints already computed)."""
    return Lock(
        tool=__version__,
        tensorrt_rtx=installed,
        manifest=relative_posix(plan.manifest.path, lock_path.parent.resolve()),
        plan=plan_identity(plan, installed, known),
        shard=shard,
    )


WRITE_BACKOFF = 10
"""A slow lock write waits this many times its duration before the next (see LockBook)."""
SLOW_WRITE = 0.010
"""Seconds: a 1,000-entry lock writes in ~4 ms, 10,000 entries in ~30 ms (measured)."""
BACKOFF_ENTRIES = 2_000
"""Only a lock this large may back off. A small lock's write is slow only when its fsync
waits on a busy disk, and then holding back the next write would just lose finished cells
to a kill -9."""


class LockBook:
    """The lock being written: entries change one cell at a time, each change on disk at once.

    Thread-safe: pool threads add entries while the others build. The lock is rewritten after
    every finished cell, except when a lock of thousands of entries writes slowly (over
    SLOW_WRITE), where rewriting after every tiny cell would cost more than the builds:
    then the next write waits ten times the last one's duration, and `flush` writes what is
    pending. Either way the lock on disk names only engines that exist and match: a delayed
    entry only means its cell is rebuilt after a kill -9.
    """

    def __init__(
        self,
        path: Path,
        header: Lock,
        entries: Mapping[str, LockEntry],
        stamps: Stamps,
        on_disk: Lock | None,
    ) -> None:
        """`on_disk`: the lock as read from `path`, None when there is none."""
        self.path = path
        self.header = header
        self.entries = dict(entries)
        self.stamps = stamps
        self._on_disk = on_disk
        self._mutex = threading.Lock()
        self._cache: EntryCache = {}
        self._next_write = 0.0
        # Imported here, not at the top (a no-op run imports this module for `lock_header`)
        # nor in `_write`, where it would count as a slow write and delay the next one.
        from matrix.atomic import write_atomic

        self._write_atomic = write_atomic

    def snapshot(self) -> Lock:
        return replace(self.header, engines=MappingProxyType(dict(self.entries)))

    def drop(self, cell_ids: Iterable[str]) -> None:
        """Entries out of the lock at once: their engines are about to be replaced."""
        with self._mutex:
            gone = [cell for cell in cell_ids if self.entries.pop(cell, None) is not None]
            if gone:
                self._write()

    def add(self, cell_id: str, entry: LockEntry, engine: Path) -> None:
        with self._mutex:
            # The entry the lock has already (an engine fetched for a fresh clone): nothing
            # to write.
            same = self.entries.get(cell_id) == entry
            self.entries[cell_id] = entry
            self.stamps.record(engine, entry.sha256)
            if not same and time.monotonic() >= self._next_write:
                self._write()

    def flush(self) -> None:
        """Write when the lock differs from the file's: a no-op run leaves it untouched."""
        with self._mutex:
            self._write()

    def _write(self) -> None:
        started = time.monotonic()
        # Compared as objects, not as text: writing 10,000 entries out only to find the
        # same text cost every build's start and end ~0.1 s.
        snapshot = self.snapshot()
        if snapshot == self._on_disk:
            return
        text = lock_to_json(snapshot, self._cache)
        self._write_atomic(self.path, text)
        self._on_disk = snapshot
        self.stamps.record(self.path, "")
        finished = time.monotonic()
        took = finished - started
        slow = took > SLOW_WRITE and len(self.entries) >= BACKOFF_ENTRIES
        self._next_write = finished + (WRITE_BACKOFF * took if slow else 0.0)


def lock_entry(
    plan: Plan, task: CellTask, result: BuildResult, lock_dir: Path, gpu: Gpu | None
) -> LockEntry:
    from datetime import datetime, timezone  # a no-op run imports this module for the header

    cell, state = task.state.cell, task.state
    assert result.sha256 is not None and result.size is not None
    return LockEntry(
        path=relative_posix(state.engine, lock_dir),
        sha256=result.sha256,
        size=result.size,
        model=model_ref(plan, cell, lock_dir),
        targets=cell.target.spec,
        resolved_targets=state.resolved_targets or (),
        runs_on=resolved_runs_on(cell.runs_on, gpu),
        weightless=cell.weightless,
        options=MappingProxyType(build_options(cell)),
        fingerprint=state.fingerprint or "",
        build_seconds=round(result.seconds, 3),
        built_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        header_mask=result.header_mask or 0,
        gpu=gpu.name if gpu is not None and task.on_gpu else None,
        io=result.io,
        weights_bytes=result.weights_bytes,
        stripped_weights_bytes=result.stripped_weights_bytes,
        peak_rss_bytes=result.peak_rss_bytes,
    )


def model_ref(plan: Plan, cell: Cell, lock_dir: Path) -> ModelRef:
    facts: ModelFacts = plan.facts[cell.model.name]
    return ModelRef(
        name=cell.model.name,
        path=relative_posix(cell.model.onnx, lock_dir),
        digest=facts.digest,
        graph_digest=facts.graph_digest,
        weights_digest=facts.weights_digest,
    )


def resolved_runs_on(runs_on: tuple[str, ...], gpu: Gpu | None) -> tuple[str, ...]:
    if gpu is None:
        return runs_on
    return tuple(gpu.cc.name if cc == "current" else cc for cc in runs_on)
