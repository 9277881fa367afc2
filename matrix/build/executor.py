"""Builds the stale cells of a plan in worker pools and keeps the lock true after every cell.

One local pool (`matrix.build.pools`) builds the CPU cells (`-j N`); each GPU gets its own
pool of one worker, so GPU builds run one at a time per GPU while CPU cells go on beside
them. One thread per pool drains its results; the calling thread only displays and waits, so
Ctrl-C lands there.

A cell starts when a worker is free and its expected peak memory fits beside the cells
building (`matrix.build.memory`). One whose worker the kernel's OOM killer ends is retried
once, alone; a second kill fails it as out of memory.

The lock is rewritten after every finished cell. A cell's old entry leaves the lock just
before the cell is handed to a worker (its engine file is about to be replaced), so the lock
on disk never names an engine that does not match, whenever the run is interrupted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix.atomic import make_durable
from matrix.build.memory import MemoryGate
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.build.pools import Pool
from matrix.gpu import Gpu
from matrix.lockfile.book import LockBook, lock_entry
from matrix.lockfile.freshness import CellState
from matrix.lockfile.types import LockEntry
from matrix.plan.types import Plan, TextEnum


class Status(TextEnum):
    BUILT = "built"
    FETCHED = "from cache"
    UP_TO_DATE = "up to date"
    SKIPPED = "skipped"
    FAILED = "failed"
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class Outcome:
    cell_id: str
    status: Status
    seconds: float = 0.0
    detail: str = ""
    """The one-line error of a failed cell, or why a cell was skipped."""
    bytes: int = 0
    """Engine bytes downloaded, for a cell fetched from the engine cache."""


@dataclass(frozen=True)
class CellTask:
    """One stale cell handed to a pool: what the survey found, what its worker gets, and
    whether it goes to the GPU's pool. (`RunOptions.jobs`, `-j`, is how many run at once.)"""

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
    cpu_pool: Pool | None = None
    """An entered pool started early for the CPU cells (`matrix.build.run`), or None."""
    on_built: Callable[[LockEntry, Path], None] | None = None
    """Called with each built cell's lock entry and engine once the lock names it (from a
    pool's thread): the engine cache pushes it."""
    memory_budget: int | None = None
    """Bytes the local builds' expected peaks may add up to (`matrix.build.memory`); None:
    no limit. A Dask cluster keeps its own count (its workers' MEMORY resource)."""


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
    pools: list[Pool] = field(default_factory=list)


def build_tasks(
    plan: Plan,
    tasks: list[CellTask],
    book: LockBook,
    options: RunOptions,
    gpu: Gpu | None,
    on_event: Callable[[ProgressEvent], None],
    on_outcome: Callable[[Outcome], None],
) -> list[Outcome]:
    """Build `tasks`; every outcome, in finishing order.

    The old lock entries of `tasks` leave the lock first (their engines are about to be
    replaced). KeyboardInterrupt kills the workers, writes the lock with every finished cell
    and propagates.
    """
    run = Run(plan, book, options, gpu)
    book.drop(task.request.cell_id for task in tasks)
    lanes = [lane for lane in _lanes(tasks, options, gpu) if lane[1]]
    threads = []
    try:
        for make_pool, lane_tasks, budget in lanes:
            pool = make_pool()
            run.pools.append(pool)
            thread = threading.Thread(
                target=_drain,
                args=(run, pool, lane_tasks, MemoryGate(budget)),
                daemon=True,
                name="rtx-matrix-lane",
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


PoolFactory = Callable[[], Pool]
"""Makes an entered pool."""


def _lanes(
    tasks: list[CellTask], options: RunOptions, gpu: Gpu | None
) -> list[tuple[PoolFactory, list[CellTask], int | None]]:
    """Local: one pool for CPU cells, one single-worker pool for the GPU. Dask: the cluster
    routes GPU cells to workers with the GPU resource, so one lane takes everything.

    Each lane comes with its memory budget. The GPU lane builds one cell at a time: the CPU
    lane's budget leaves room for the biggest of its cells."""
    if options.scheduler is not None:
        from matrix.build.pools.dask_cluster import DaskBackend

        scheduler = options.scheduler
        return [(lambda: DaskBackend(scheduler, options.timeout).__enter__(), tasks, None)]
    from matrix.build.pools import local_pool

    cpu = [task for task in tasks if not task.on_gpu]
    on_gpu = [task for task in tasks if task.on_gpu] if gpu is not None else []
    cpu_jobs = max(1, min(options.jobs, len(cpu)))
    warm = options.cpu_pool
    budget = options.memory_budget
    cpu_budget = budget
    if budget is not None and on_gpu:
        cpu_budget = max(budget - max(task.request.expected_peak_bytes for task in on_gpu), 0)
    lanes: list[tuple[PoolFactory, list[CellTask], int | None]] = [
        (
            lambda: warm if warm is not None else local_pool(cpu_jobs, options.timeout).__enter__(),
            cpu,
            cpu_budget,
        )
    ]
    if on_gpu and gpu is not None:
        from matrix.gpu import cuda_env

        env = cuda_env(gpu)
        lanes.append((lambda: local_pool(1, options.timeout, env).__enter__(), on_gpu, budget))
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


def _drain(run: Run, pool: Pool, tasks: list[CellTask], gate: MemoryGate) -> None:
    try:
        _drain_pool(run, pool, tasks, gate)
    except BaseException as error:  # reported to the calling thread, which decides
        if not run.stop_starting.is_set():
            run.messages.put(("crash", error))
    finally:
        run.messages.put(("done", None))


@dataclass(frozen=True)
class _Waiting:
    task: CellTask
    alone: bool = False
    """Retried after the OOM killer ended its first build: nothing builds beside it."""

    @property
    def need(self) -> int:
        return self.task.request.expected_peak_bytes


def _drain_pool(
    run: Run, pool: Pool, tasks: list[CellTask], gate: MemoryGate | None = None
) -> None:
    """Hand the pool a cell whenever a worker is free and the memory `gate` lets it start;
    stop handing them out after a failure. A cell whose worker the kernel's OOM killer
    ended is retried once, alone, before any other starts."""
    gate = gate or MemoryGate(None)
    waiting = [_Waiting(task) for task in tasks]
    by_id = {task.request.cell_id: task for task in tasks}
    building: dict[str, _Waiting] = {}

    def start_more() -> None:
        batch: list[_Waiting] = []
        while waiting and gate.building < pool.jobs and not run.stop_starting.is_set():
            index = gate.next_to_start(waiting)
            if index is None:
                break
            cell = waiting.pop(index)
            gate.take(cell.need, cell.alone)
            building[cell.task.request.cell_id] = cell
            batch.append(cell)
        for cell in batch:
            pool.submit(cell.task.request)

    start_more()
    for result in pool.results(lambda event: run.messages.put(("event", event))):
        cell = building.pop(result.cell_id)
        gate.give_back(cell.need)
        if result.out_of_memory and not cell.alone and not run.stop_starting.is_set():
            waiting.insert(0, _Waiting(cell.task, alone=True))
            why = f"{result.error}; retrying alone"
            run.messages.put(("event", ProgressEvent(result.cell_id, "retry", phase=why)))
            start_more()
            continue
        if not result.ok and not run.options.keep_going:
            run.stop_starting.set()
        start_more()  # before recording: the worker builds on while the lock is written
        outcome = _record(run, by_id[result.cell_id], result)
        if outcome.status is Status.FAILED and not run.options.keep_going:
            run.stop_starting.set()  # also a built engine lost before it could be recorded
        run.messages.put(("outcome", outcome))
    for cell in waiting:
        run.messages.put(("outcome", Outcome(cell.task.request.cell_id, Status.NOT_STARTED)))


def _record(run: Run, task: CellTask, result: BuildResult) -> Outcome:
    if not result.ok:
        return Outcome(result.cell_id, Status.FAILED, result.seconds, result.error or "failed")
    try:
        make_durable(task.state.engine)  # workers don't fsync: no lock may name it before this
    except OSError as error:
        return Outcome(result.cell_id, Status.FAILED, result.seconds, f"engine lost: {error}")
    lock_dir = run.book.path.parent.resolve()
    entry = lock_entry(run.plan, task, result, lock_dir, run.gpu)
    run.book.add(result.cell_id, entry, task.state.engine)
    if run.options.on_built is not None:
        run.options.on_built(entry, task.state.engine)
    return Outcome(result.cell_id, Status.BUILT, result.seconds)


def make_request(job_state: CellState, expected_peak: int = 0) -> BuildRequest:
    """What a worker needs to build one cell; `expected_peak`: bytes of memory it is
    expected to need (`matrix.build.memory.expected_peak`)."""
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
        expected_peak_bytes=expected_peak,
    )
