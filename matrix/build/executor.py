"""Builds the stale cells of a plan in worker pools and keeps the lock true after every cell.

One `WorkerPool` builds the CPU cells (`-j N`); each GPU gets its own pool of one worker, so
GPU builds run one at a time per GPU while CPU cells go on beside them. One thread per pool
drains its results; the calling thread only displays and waits, so Ctrl-C lands there.

The lock is rewritten after every finished cell. A cell's old entry leaves the lock just
before the cell is handed to a worker (its engine file is about to be replaced), so the lock
on disk never names an engine that does not match, whenever the run is interrupted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matrix import __version__
from matrix.atomic import make_durable, write_atomic
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.facts.types import ModelFacts
from matrix.gpu import Gpu
from matrix.lockfile.fingerprint import build_options, plan_stamp
from matrix.lockfile.freshness import CellState, relative_posix
from matrix.lockfile.io import EntryCache, lock_to_json
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, LockEntry, ModelRef
from matrix.plan.types import Plan


class Status(str, Enum):
    BUILT = "built"
    UP_TO_DATE = "up to date"
    SKIPPED = "skipped"
    FAILED = "failed"
    NOT_STARTED = "not started"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    cell_id: str
    status: Status
    seconds: float = 0.0
    detail: str = ""
    """The one-line error of a failed cell, or why a cell was skipped."""


@dataclass(frozen=True)
class Job:
    state: CellState
    request: BuildRequest
    on_gpu: bool


@dataclass(frozen=True)
class RunOptions:
    jobs: int = 1
    keep_going: bool = False
    timeout: float | None = None
    scheduler: str | None = None
    """A Dask scheduler address: build there (`--executor dask`) instead of local workers."""
    cpu_pool: Any = None
    """An entered WorkerPool started early for the CPU cells (see `build`), or None."""


# ------------------------------------------------------------------------------ the lock


def lock_header(
    plan: Plan,
    lock_path: Path,
    installed: str,
    shard: str | None = None,
    known: Mapping[str, str] | None = None,
) -> Lock:
    """A lock with no engines, stamped for `plan` (`known`: fingerprints already computed)."""
    return Lock(
        tool=__version__,
        tensorrt_rtx=installed,
        manifest=relative_posix(plan.manifest.path, lock_path.parent.resolve()),
        plan=plan_stamp(plan, installed, known),
        shard=shard,
    )


WRITE_BACKOFF = 10
"""A slow lock write waits this many times its duration before the next (see LockBook)."""
SLOW_WRITE = 0.010
"""Seconds: a 1,000-entry lock writes in ~4 ms, 10,000 entries in ~30 ms (measured)."""


class LockBook:
    """The lock being written: entries change one cell at a time, each change on disk at once.

    Thread-safe: pool threads add entries while the others build. The lock is rewritten after
    every finished cell, except when a write is slow (over SLOW_WRITE: locks of several
    thousand entries), where rewriting after every tiny cell would cost more than the builds:
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
        on_disk: str | None,
    ) -> None:
        self.path = path
        self.header = header
        self.entries = dict(entries)
        self.stamps = stamps
        self._on_disk = on_disk
        self._mutex = threading.Lock()
        self._cache: EntryCache = {}
        self._next_write = 0.0

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
            self.entries[cell_id] = entry
            self.stamps.record(engine, entry.sha256)
            if time.monotonic() >= self._next_write:
                self._write()

    def flush(self) -> None:
        """Write when the text differs from the file: a no-op run leaves the lock untouched."""
        with self._mutex:
            self._write()

    def _write(self) -> None:
        started = time.monotonic()
        text = lock_to_json(self.snapshot(), self._cache)
        if text == self._on_disk:
            return
        write_atomic(self.path, text)
        self._on_disk = text
        self.stamps.record(self.path, "")
        finished = time.monotonic()
        took = finished - started
        self._next_write = finished + (WRITE_BACKOFF * took if took > SLOW_WRITE else 0.0)


def lock_entry(
    plan: Plan, job: Job, result: BuildResult, lock_dir: Path, gpu: Gpu | None
) -> LockEntry:
    cell, state = job.state.cell, job.state
    facts: ModelFacts = plan.facts[cell.model.name]
    assert result.sha256 is not None and result.size is not None
    return LockEntry(
        path=relative_posix(state.engine, lock_dir),
        sha256=result.sha256,
        size=result.size,
        model=ModelRef(
            name=cell.model.name,
            path=relative_posix(cell.model.onnx, lock_dir),
            digest=facts.digest,
            graph_digest=facts.graph_digest,
            weights_digest=facts.weights_digest,
        ),
        targets=cell.target.spec,
        resolved_targets=state.resolved_targets or (),
        runs_on=resolved_runs_on(cell.runs_on, gpu),
        weightless=cell.weightless,
        options=MappingProxyType(build_options(cell)),
        fingerprint=state.fingerprint or "",
        build_seconds=round(result.seconds, 3),
        built_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        header_mask=result.header_mask or 0,
        gpu=gpu.name if gpu is not None and job.on_gpu else None,
    )


def resolved_runs_on(runs_on: tuple[str, ...], gpu: Gpu | None) -> tuple[str, ...]:
    if gpu is None:
        return runs_on
    return tuple(gpu.cc.name if cc == "current" else cc for cc in runs_on)


# ---------------------------------------------------------------------------- building


Message = tuple[str, Any]
"""What pool threads tell the calling thread: ("event", ProgressEvent), ("outcome", Outcome),
("done", None) or ("crash", exception)."""


@dataclass
class Run:
    plan: Plan
    book: LockBook
    options: RunOptions
    gpu: Gpu | None
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    stop_starting: threading.Event = field(default_factory=threading.Event)
    pools: list[Any] = field(default_factory=list)


def build_jobs(
    plan: Plan,
    jobs: list[Job],
    book: LockBook,
    options: RunOptions,
    gpu: Gpu | None,
    on_event: Callable[[ProgressEvent], None],
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    """Build `jobs`; every outcome, in finishing order.

    The old lock entries of `jobs` leave the lock first (their engines are about to be
    replaced). KeyboardInterrupt kills the workers, writes the lock with every finished cell
    and propagates.
    """
    run = Run(plan, book, options, gpu)
    book.drop(job.request.cell_id for job in jobs)
    lanes = [lane for lane in _lanes(jobs, options, gpu) if lane[1]]
    threads = []
    try:
        for make_pool, lane_jobs in lanes:
            pool = make_pool()
            run.pools.append(pool)
            thread = threading.Thread(
                target=_drain, args=(run, pool, lane_jobs), daemon=True, name="rtx-matrix-lane"
            )
            threads.append(thread)
            thread.start()
        return _collect(run, len(threads), on_event, on_outcome)
    finally:
        run.stop_starting.set()
        for pool in run.pools:
            pool.shutdown()
        for thread in threads:
            thread.join(timeout=5)
        book.flush()


PoolFactory = Callable[[], Any]
"""Makes an entered pool with WorkerPool's interface (jobs, submit, results, shutdown)."""


def _lanes(
    jobs: list[Job], options: RunOptions, gpu: Gpu | None
) -> list[tuple[PoolFactory, list[Job]]]:
    """Local: one pool for CPU cells, one single-worker pool for the GPU. Dask: the cluster
    routes GPU cells to workers with the GPU resource, so one lane takes everything."""
    if options.scheduler is not None:
        from matrix.build.pools.dask_cluster import DaskBackend

        scheduler = options.scheduler
        return [(lambda: DaskBackend(scheduler, options.timeout).__enter__(), jobs)]
    from matrix.build.pools.posix import WorkerPool

    cpu = [job for job in jobs if not job.on_gpu]
    on_gpu = [job for job in jobs if job.on_gpu]
    cpu_jobs = max(1, min(options.jobs, len(cpu)))
    warm = options.cpu_pool
    lanes: list[tuple[PoolFactory, list[Job]]] = [
        (
            lambda: warm if warm is not None else WorkerPool(cpu_jobs, options.timeout).__enter__(),
            cpu,
        )
    ]
    if on_gpu and gpu is not None:
        from matrix.gpu import cuda_env

        env = cuda_env(gpu)
        lanes.append((lambda: WorkerPool(1, options.timeout, env).__enter__(), on_gpu))
    return lanes


def _collect(
    run: Run,
    lanes: int,
    on_event: Callable[[ProgressEvent], None],
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    while lanes:
        try:
            kind, payload = run.messages.get(timeout=0.1)
        except queue.Empty:
            continue  # wake up now and then so Ctrl-C is handled promptly
        if kind == "event":
            on_event(payload)
        elif kind == "outcome":
            outcomes.append(payload)
            on_outcome(payload)
        elif kind == "done":
            lanes -= 1
        else:
            raise payload
    return outcomes


def _drain(run: Run, pool: Any, jobs: list[Job]) -> None:
    try:
        _drain_pool(run, pool, jobs)
    except BaseException as error:  # reported to the calling thread, which decides
        if not run.stop_starting.is_set():
            run.messages.put(("crash", error))
    finally:
        run.messages.put(("done", None))


def _drain_pool(run: Run, pool: Any, jobs: list[Job]) -> None:
    """Hand the pool one cell per free worker; stop handing them out after a failure."""
    waiting = list(reversed(jobs))
    by_id = {job.request.cell_id: job for job in jobs}
    in_flight = 0

    def start_more() -> None:
        nonlocal in_flight
        batch: list[Job] = []
        while waiting and in_flight + len(batch) < pool.jobs and not run.stop_starting.is_set():
            batch.append(waiting.pop())
        for job in batch:
            pool.submit(job.request)
        in_flight += len(batch)

    start_more()
    for result in pool.results(lambda event: run.messages.put(("event", event))):
        in_flight -= 1
        if not result.ok and not run.options.keep_going:
            run.stop_starting.set()
        start_more()  # before recording: the worker builds on while the lock is written
        outcome = _record(run, by_id[result.cell_id], result)
        if outcome.status is Status.FAILED and not run.options.keep_going:
            run.stop_starting.set()  # also a built engine lost before it could be recorded
        run.messages.put(("outcome", outcome))
    for job in reversed(waiting):
        run.messages.put(("outcome", Outcome(job.request.cell_id, Status.NOT_STARTED)))


def _record(run: Run, job: Job, result: BuildResult) -> Outcome:
    if not result.ok:
        return Outcome(result.cell_id, Status.FAILED, result.seconds, result.error or "failed")
    try:
        make_durable(job.state.engine)  # workers don't fsync: no lock may name it before this
    except OSError as error:
        return Outcome(result.cell_id, Status.FAILED, result.seconds, f"engine lost: {error}")
    lock_dir = run.book.path.parent.resolve()
    entry = lock_entry(run.plan, job, result, lock_dir, run.gpu)
    run.book.add(result.cell_id, entry, job.state.engine)
    return Outcome(result.cell_id, Status.BUILT, result.seconds)


def make_request(job_state: CellState) -> BuildRequest:
    """What a worker needs to build one cell."""
    from matrix.plan.planner import expected_mask

    cell = job_state.cell
    engine = job_state.engine
    ccs = () if cell.target.current else (job_state.resolved_targets or ())
    return BuildRequest(
        cell_id=cell.id,
        onnx=str(cell.model.onnx),
        ccs=ccs,
        use_gpu=cell.target.current,
        weightless=cell.weightless,
        options=cell.model.builder,  # the loader merged the manifest-wide options in
        profiles=cell.model.profiles,
        engine_path=str(engine),
        log_path=str(engine.with_suffix(".log")),
        expected_mask=expected_mask(cell),
        device=0,  # a GPU pool's environment makes its GPU CUDA device 0
    )


def remove_stale_temp_files(jobs: Iterable[Job]) -> None:
    """Temporaries left by builds of a run killed with -9, whose pool could not clean up."""
    from matrix.build.engine_header import temp_files

    for job in jobs:
        for temp in temp_files(job.request.engine_path):
            temp.unlink(missing_ok=True)
