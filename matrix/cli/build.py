"""`rtx-matrix build`: build every stale cell of the plan, like make, and keep the lock true.

The no-op path (everything up to date) reads the manifest, the facts cache, the lock and the
stamps, and prints one line: no tensorrt_rtx, onnx or rich import.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix.cli import head_start
from matrix.cli.common import add_manifest_args, survey_for
from matrix.errors import (
    GpuError,
    Interrupted,
    LockBusy,
    PlanRejected,
    Stale,
    UsageError,
)
from matrix.plan.load import resolve_manifest

if TYPE_CHECKING:  # the rest is imported where used: see `start_workers_early`
    from matrix.build.executor import Outcome
    from matrix.build.worker import Child
    from matrix.lockfile.survey import Survey
    from matrix.plan.types import Cell, Plan


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build every stale engine of the manifest and update the lockfile",
        description=(
            "Build the cells of the manifest whose engine is missing or out of date (model, "
            "options, targets or TensorRT-RTX version changed), like make. The lockfile is "
            "rewritten after every finished cell."
        ),
    )
    add_manifest_args(parser)
    parser.add_argument(
        "cells",
        nargs="*",
        metavar="CELL",
        help="build only these cells: cell id, model name or glob (m@sm8*)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="parallel builds (default: number of cores)",
    )
    parser.add_argument(
        "-k", "--keep-going", action="store_true", help="go on building other cells after a failure"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="fail a cell whose build runs longer than S seconds",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even up-to-date cells")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be built and why; build nothing"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when anything would be built; build nothing"
    )
    parser.add_argument(
        "--skip-rejected", action="store_true", help="warn about rejected cells instead of failing"
    )
    parser.add_argument(
        "--require-gpu", action="store_true", help="fail instead of skipping cells that need a GPU"
    )
    parser.add_argument("--device", type=int, metavar="N", help="GPU (NVML index) to build on")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for another build of this output to end",
    )
    parser.add_argument("-o", "--output", metavar="LOCK", help="lockfile to write")
    parser.add_argument("--shard", metavar="K/N", help="build only shard K of N (1-based)")
    parser.add_argument(
        "--shard-strategy",
        choices=("balanced", "hash"),
        default="balanced",
        help="balanced: longest first by recorded build time (default); "
        "hash: by cell id, for plans that may differ between shards",
    )
    parser.add_argument(
        "--pool",
        choices=("cpu", "gpu"),
        help="only cells that build on the CPU, or only those needing a GPU",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local worker processes (default) or a Dask cluster",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://HOST:PORT) for --executor dask",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="print build phases")
    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def refuse_rejected(plan: Plan, chosen: Sequence[Cell], skip: bool) -> None:
    from matrix.plan.report import rejection_lines

    ids = {cell.id for cell in chosen}
    lines = [line for line in rejection_lines(plan) if line.split(":", 1)[0] in ids]
    if not lines:
        return
    label = "warning" if skip else "error"
    for line in lines if skip else lines[:-1]:
        print(f"{label}: {line}", file=sys.stderr)
    if not skip:
        raise PlanRejected(lines[-1])


# ------------------------------------------------------------------------------ the command


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    scheduler(args)  # a bad flag combination fails before any work
    workers = start_workers_early(args)
    try:
        state = survey_for(args)
        refuse_rejected(state.plan, state.chosen, args.skip_rejected)
        if args.require_gpu and state.skipped:
            raise GpuError(
                f"--require-gpu: {len(state.skipped)} cells need a GPU: {state.gpu_missing}"
            )
        if args.dry_run or args.check:
            print_pending(state, sys.stdout)
            if args.check and (state.to_build or state.removed):
                raise Stale(f"{len(state.to_build) + len(state.removed)} cells out of date")
            return 0
        if not needs_writing(state):
            if not args.quiet:
                print_noop(state)
            state.stamps.save()
            return 0
        if workers is None:
            workers = start_workers(args, state)
        return build_under_lock(args, state, started, workers)
    finally:
        if workers is not None:
            workers.shutdown()  # safe twice: build_jobs shuts the pools it used


def start_workers_early(args: argparse.Namespace) -> Any:
    """Start the CPU workers before the survey when this run will almost surely build: each
    takes ~80 ms to start Python and import the library, which then overlaps the parent's
    imports and planning. Only stat() calls decide, so a no-op run pays nothing for it.
    Not beyond one worker per core: how many cells there are is not known yet, and `-j 64`
    for a two-cell manifest must not start 64 library imports. The worker `head_start`
    started before the arguments were parsed is adopted here, or killed."""
    started = head_start.take()
    if not _early(args):
        head_start.discard(started)
        return None
    return _worker_pool(args.jobs, args.timeout, [started] if started else [])


def _early(args: argparse.Namespace) -> bool:
    if args.executor != "local" or args.dry_run or args.check or args.pool == "gpu":
        return False
    if args.jobs > (os.cpu_count() or 1):
        return False
    manifest = str(resolve_manifest(args.manifest))
    lock = args.output or head_start.default_lock(manifest)
    return head_start.build_likely(manifest, lock, args.force)


def start_workers(args: argparse.Namespace, state: Survey) -> Any:
    """Start the CPU workers once the survey shows CPU work, so their start overlaps taking
    the output lock and preparing the batch."""
    cpu_cells = sum(not s.cell.needs_gpu for s in state.to_build)
    if args.executor != "local" or not cpu_cells:
        return None
    return _worker_pool(min(args.jobs, cpu_cells), args.timeout)


def _worker_pool(jobs: int, timeout: float | None, started: Sequence[Child] = ()) -> Any:
    from matrix.build.pools.posix import WorkerPool

    return WorkerPool(max(1, jobs), timeout, started=started).__enter__()


def scheduler(args: argparse.Namespace) -> str | None:
    if args.executor == "local":
        if args.scheduler:
            raise UsageError("--scheduler goes with --executor dask")
        return None
    if not args.scheduler:
        raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT")
    return str(args.scheduler)


def needs_writing(state: Survey) -> bool:
    if state.to_build or state.removed:
        return True
    from matrix.build.executor import lock_header

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


def print_noop(state: Survey) -> None:
    fresh = len(state.freshness.up_to_date)
    print(f"{fresh} cell{'' if fresh == 1 else 's'} up to date")
    for skipped in state.skipped:
        print(f"skipped {skipped.cell.id}: needs a GPU: {state.gpu_missing}")


def print_pending(state: Survey, out: Any) -> None:
    for pending in state.to_build:
        print(f"would build {pending.cell.id}: {', '.join(pending.reasons)}", file=out)
    for skipped in state.skipped:
        print(f"would skip {skipped.cell.id}: needs a GPU: {state.gpu_missing}", file=out)
    for cell_id in state.removed:
        print(f"would remove {cell_id} from the lock: removed from the manifest", file=out)
    fresh = len(state.freshness.up_to_date)
    print(
        f"{len(state.to_build)} to build, {fresh} up to date, {len(state.skipped)} skipped, "
        f"{len(state.removed)} to remove",
        file=out,
    )


def build_under_lock(
    args: argparse.Namespace, first: Survey, started: float, workers: Any
) -> int:
    """Take the output folder's lock, look again if another run built meanwhile, build."""
    with output_lock(first.plan.manifest.output.resolve(), args.wait):
        state = first if first.still_current() else survey_for(args)
        return build_stale(args, state, started, workers)


def output_lock(output: Path, wait: float) -> Any:
    """An exclusive `flock` on the output folder's lock file, waiting up to `wait` seconds.

    `fcntl.flock` itself, not the filelock package: its import (~12 ms) sat between the plan
    and the first build of every run. The kernel drops the lock when the process dies, so a
    killed run never leaves the folder locked."""
    import fcntl

    from matrix.lockfile.stamps import state_dir

    folder = state_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                pid = _read_owner(folder / "owner")
                raise LockBusy(
                    f"another rtx-matrix build is running on {output} (pid {pid})"
                ) from None
            time.sleep(min(_LOCK_POLL, max(0.0, deadline - time.monotonic())))
    (folder / "owner").write_text(str(os.getpid()), encoding="utf-8")
    return _Held(fd)


_LOCK_POLL = 0.05


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the only descriptor releases the flock


def _read_owner(owner: Path) -> str:
    try:
        return owner.read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


def build_stale(
    args: argparse.Namespace, state: Survey, started: float, workers: Any = None
) -> int:
    from matrix.build.executor import (
        Job,
        LockBook,
        RunOptions,
        Status,
        build_jobs,
        lock_header,
        make_request,
        remove_stale_temp_files,
    )
    from matrix.build.progress import Batch, make_display, print_summary
    from matrix.lockfile.io import lock_to_json

    plan, lock = state.plan, state.lock
    header = lock_header(
        plan,
        state.lock_path,
        state.freshness.installed,
        shard=state.shard,
        known=state.freshness.planned_fingerprints(),
    )
    entries = dict(lock.engines) if lock else {}
    on_disk = lock_to_json(lock) if lock else None
    book = LockBook(state.lock_path, header, entries, state.stamps, on_disk)
    jobs = [Job(s, make_request(s), s.cell.needs_gpu) for s in state.to_build]
    remove_stale_temp_files(jobs)
    expected = {
        s.cell.id: entries[s.cell.id].build_seconds for s in state.to_build if s.cell.id in entries
    }
    display = make_display(args.quiet, args.verbose)
    display.start(Batch(tuple(j.request.cell_id for j in jobs), expected, args.jobs))
    options = RunOptions(
        jobs=args.jobs,
        keep_going=args.keep_going,
        timeout=args.timeout,
        scheduler=scheduler(args),
        cpu_pool=workers,
    )
    previous = _sigterm_as_interrupt()
    try:
        built = build_jobs(plan, jobs, book, options, state.gpu, display.event, display.outcome)
    except KeyboardInterrupt:
        display.stop()
        state.stamps.save()
        raise Interrupted("interrupted: the lock holds every cell that finished") from None
    finally:
        _restore_sigterm(previous)
    display.stop()
    outcomes = [*built, *other_outcomes(state)]
    failed = any(o.status in (Status.FAILED, Status.NOT_STARTED) for o in outcomes)
    if not failed:
        book.drop(state.removed)
    book.flush()
    state.stamps.save()
    print_summary(outcomes, time.monotonic() - started, args.quiet)
    return 1 if failed else 0


def other_outcomes(state: Survey) -> list[Outcome]:
    from matrix.build.executor import Outcome, Status

    fresh = [Outcome(s.cell.id, Status.UP_TO_DATE) for s in state.freshness.up_to_date]
    skipped = [
        Outcome(s.cell.id, Status.SKIPPED, detail=f"needs a GPU: {state.gpu_missing}")
        for s in state.skipped
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
