"""Build what a survey found stale, under the output folder's lock: what `rtx-matrix build`
does once it has parsed its arguments, callable from Python too.

    from matrix.lockfile.survey import survey
    from matrix.build.run import BuildSettings, build

    state = survey(Path("rtx-matrix.yaml"))
    outcomes = build(state, BuildSettings(jobs=4))

The lock is rewritten after every finished cell; Ctrl-C or SIGTERM raise `Interrupted` once
the lock holds every finished cell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix.errors import Interrupted, OutputBusy
from matrix.file_lock import Busy, file_lock
from matrix.lockfile.stamps import state_dir

if TYPE_CHECKING:
    from matrix.build.executor import CellTask, Outcome
    from matrix.build.pools import Pool
    from matrix.build.pools.posix_child import Child
    from matrix.build.progress import Display
    from matrix.engine_cache.use import CacheUse
    from matrix.lockfile.survey import Survey
    from matrix.lockfile.types import LockEntry
    from matrix.manifest.types import CacheSpec


@dataclass(frozen=True)
class BuildSettings:
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Parallel CPU builds."""
    keep_going: bool = False
    """Go on starting cells after one failed."""
    timeout: float | None = None
    """Seconds a cell may build before it fails."""
    wait: float = 0.0
    """Seconds to wait for another build of the same output to end."""
    scheduler: str | None = None
    """A Dask scheduler address: build there instead of in local workers."""
    memory: int | None = None
    """Bytes the builds' expected peaks may add up to; None: the memory available now less
    a margin (`matrix.build.memory.default_budget`)."""
    quiet: bool = False
    verbose: bool = False
    cache: CacheSpec | None = None
    """The engine cache (`matrix.engine_cache.config.choose_cache`): stale cells are fetched
    from it when it has them, and what is built is pushed to it when `cache.push`."""
    fetch_only: bool = False
    """`cache pull`: fetch what the cache has and build nothing."""


def build(
    state: Survey,
    settings: BuildSettings = BuildSettings(),
    workers: Pool | None = None,
    resurvey: Callable[[], Survey] | None = None,
) -> list[Outcome]:
    """Take the output folder's lock, look again (`resurvey`) if another run built meanwhile,
    and build every stale cell; every cell's outcome. `workers`: an entered CPU pool to use."""
    started = time.monotonic()
    with output_lock(state.plan.manifest.output.resolve(), settings.wait):
        if not state.still_current() and resurvey is not None:
            state = resurvey()
        return build_stale(state, settings, started, workers)


@contextlib.contextmanager
def output_lock(output: Path, wait: float) -> Iterator[None]:
    """The output folder's lock, with the holder's pid beside it for the busy message."""
    folder = state_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(folder / "lock", wait):
            (folder / "owner").write_text(str(os.getpid()), encoding="utf-8")
            yield
    except Busy:
        pid = _read_owner(folder / "owner")
        raise OutputBusy(f"another rtx-matrix build is running on {output} (pid {pid})") from None


def _read_owner(owner: Path) -> str:
    try:
        return owner.read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


def needs_writing(state: Survey) -> bool:
    """Whether a run must touch the lock: something to build or drop, or a stale header."""
    if state.to_build or state.removed:
        return True
    from matrix.lockfile.book import lock_header

    header = lock_header(
        state.plan,
        state.lock_path,
        state.freshness.installed,
        shard=state.shard,
        known=state.freshness.planned_fingerprints(),
    )
    lock = state.lock
    return lock is None or (lock.tool, lock.tensorrt_rtx, lock.manifest, lock.plan, lock.shard) != (
        header.tool,
        header.tensorrt_rtx,
        header.manifest,
        header.plan,
        header.shard,
    )


def start_workers(
    settings: BuildSettings, state: Survey, started: Sequence[Child] = ()
) -> Pool | None:
    """Start the CPU workers once the survey shows CPU work, so their start overlaps taking
    the output lock and preparing the batch."""
    cpu_cells = sum(not s.cell.needs_gpu for s in state.to_build)
    if settings.scheduler is not None or not cpu_cells:
        return None
    return cpu_pool(min(settings.jobs, cpu_cells), settings.timeout, started)


def cpu_pool(jobs: int, timeout: float | None, started: Sequence[Child] = ()) -> Pool:
    from matrix.build.pools import local_pool

    return local_pool(max(1, jobs), timeout, started=started).__enter__()


def build_stale(
    state: Survey, settings: BuildSettings, started: float, workers: Pool | None = None
) -> list[Outcome]:
    """Build the stale cells of `state` (the caller holds the output lock), or fetch them from
    the engine cache; every outcome, the up-to-date and skipped cells' included."""
    from matrix.build.executor import (
        CellTask,
        Outcome,
        RunOptions,
        Status,
        build_tasks,
        make_request,
    )
    from matrix.build.progress import Batch, make_display
    from matrix.build.temp_files import remove_stale_temp_files
    from matrix.lockfile.book import LockBook, lock_header

    plan, lock = state.plan, state.lock
    header = lock_header(
        plan,
        state.lock_path,
        state.freshness.installed,
        shard=state.shard,
        known=state.freshness.planned_fingerprints(),
    )
    entries = dict(lock.engines) if lock else {}
    book = LockBook(state.lock_path, header, entries, state.stamps, lock)
    remove_stale_temp_files(make_request(s) for s in state.freshness.stale)
    peaks = expected_peaks(state, entries)
    budget = memory_budget(settings)
    display = make_display(settings.quiet, settings.verbose)
    cache = _from_cache(state, settings, display)
    pending = [s for s in state.to_build if s.cell.id not in cache.found]
    if settings.scheduler is None and not settings.fetch_only:
        warn_oversized({s.cell.id: peaks[s.cell.id] for s in pending}, budget)
    tasks = [CellTask(s, make_request(s, peaks[s.cell.id]), s.cell.needs_gpu) for s in pending]
    expected = {
        s.cell.id: entries[s.cell.id].build_seconds for s in state.to_build if s.cell.id in entries
    }
    cells = tuple(s.cell.id for s in state.to_build) + cache.extra_cells(state)
    display.start(Batch(cells, expected, settings.jobs))
    started_here: Pool | None = None
    previous = _sigterm_as_interrupt()
    try:
        if workers is None and cache.session is not None and not settings.fetch_only:
            started_here = workers = _workers_for(tasks, settings)  # start while fetching
        fetched, refused = cache.fetch(state, book, display)
        tasks += [
            CellTask(s, make_request(s, peaks[s.cell.id]), s.cell.needs_gpu) for s in refused
        ]
        options = RunOptions(
            jobs=settings.jobs,
            keep_going=settings.keep_going,
            timeout=settings.timeout,
            scheduler=settings.scheduler,
            cpu_pool=workers,
            on_built=cache.on_built(),
            memory_budget=budget,
        )
        if settings.fetch_only:
            built = [Outcome(t.request.cell_id, Status.NOT_STARTED, detail=cache.why_not(t))
                     for t in tasks]
        else:
            built = build_tasks(plan, tasks, book, options, state.gpu, display.event,
                                display.outcome)
        cache.finish(display)
    except KeyboardInterrupt:
        cache.finish(display, cancel=True)
        display.stop()
        state.stamps.save()
        raise Interrupted("interrupted: the lock holds every cell that finished") from None
    finally:
        _restore_sigterm(previous)
        if started_here is not None:
            started_here.shutdown()  # safe twice: the executor shuts the pools it used
    display.stop()
    outcomes = [*fetched, *built, *other_outcomes(state, cache.found)]
    if not any(o.status in (Status.FAILED, Status.NOT_STARTED) for o in outcomes):
        book.drop(state.removed)
    book.flush()
    state.stamps.save()
    return outcomes


def _workers_for(tasks: Sequence[CellTask], settings: BuildSettings) -> Pool | None:
    cpu_cells = sum(not task.on_gpu for task in tasks)
    if settings.scheduler is not None or not cpu_cells:
        return None
    return cpu_pool(min(settings.jobs, cpu_cells), settings.timeout)


def _from_cache(state: Survey, settings: BuildSettings, display: Display) -> CacheUse:
    """What the engine cache can serve of the stale cells: looked up now, fetched later."""
    from matrix.engine_cache.use import CacheUse

    if settings.cache is None or not state.freshness.stale:
        return CacheUse(None)
    return CacheUse.look_up(settings.cache, state, display, settings.fetch_only)


def expected_peaks(state: Survey, entries: Mapping[str, LockEntry]) -> dict[str, int]:
    """Cell id -> bytes of memory its build is expected to need at its peak: what the lock
    recorded last time while the model is the same, else the estimate from its size."""
    from matrix.build.memory import expected_peak

    peaks = {}
    for pending in state.to_build:
        cell = pending.cell
        facts = state.plan.facts[cell.model.name]
        entry = entries.get(cell.id)
        recorded = entry.peak_rss_bytes if entry and entry.model.digest == facts.digest else None
        peaks[cell.id] = expected_peak(recorded, facts.size)
    return peaks


def memory_budget(settings: BuildSettings) -> int | None:
    from matrix.build.memory import available_memory, default_budget

    if settings.memory is not None:
        return settings.memory
    return default_budget(available_memory())


def warn_oversized(peaks: Mapping[str, int], budget: int | None) -> None:
    from matrix.build.memory import oversized, oversized_warning

    for cell in oversized(peaks, budget):
        assert budget is not None
        print(oversized_warning(cell, peaks[cell], budget), file=sys.stderr)


def other_outcomes(state: Survey, fetched: Container[str] = ()) -> list[Outcome]:
    from matrix.build.executor import Outcome, Status

    fresh = [Outcome(s.cell.id, Status.UP_TO_DATE) for s in state.freshness.up_to_date]
    skipped = [
        Outcome(s.cell.id, Status.SKIPPED, detail=state.why_skipped(s))
        for s in state.skipped
        if s.cell.id not in fetched
    ]
    return fresh + skipped


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_as_interrupt() -> Any:
    """CI runners cancel with SIGTERM: clean up as for Ctrl-C (workers, temp files, lock)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
