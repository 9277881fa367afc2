"""`rtx-matrix build`: build every stale cell of the plan, like make, and keep the lock true.

The no-op path (everything up to date) reads the manifest, the facts cache, the lock and the
stamps, and prints one line: no tensorrt_rtx, onnx or rich import.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from matrix.cli import head_start
from matrix.cli.common import (
    add_cache_args,
    add_manifest_args,
    cache_of,
    report_rejected,
    survey_for,
)
from matrix.errors import GpuError, Stale, UsageError
from matrix.plan.load import resolve_manifest

if TYPE_CHECKING:  # the rest is imported where used: see `start_workers_early`
    from matrix.build.pools import Pool
    from matrix.lockfile.survey import Survey


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
        "--memory",
        type=_memory_size,
        metavar="SIZE",
        help="memory the builds may use at once (48GiB, 512MiB or bytes; default: the memory "
        "available now less 10%%): a cell starts only when its expected peak fits; "
        "Dask workers state their own (--resources MEMORY=...)",
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
        help="local worker processes (default) or a Dask cluster, which sends GPU cells to "
        "workers started with --resources GPU=1 (this machine needs no GPU; `current` cells "
        "are skipped)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://HOST:PORT) for --executor dask",
    )
    add_cache_args(parser)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="print build phases")
    parser.set_defaults(run=run)


def _memory_size(text: str) -> int:
    from matrix.manifest.loader import parse_size

    size = parse_size(text.strip())
    if size is None or size < 1:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (try 48GiB, 512MiB)")
    return size


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# ------------------------------------------------------------------------------ the command


def run(args: argparse.Namespace) -> int:
    from matrix.build.run import BuildSettings

    settings = BuildSettings(
        jobs=args.jobs,
        keep_going=args.keep_going,
        timeout=args.timeout,
        wait=args.wait,
        scheduler=scheduler(args),  # a bad flag combination fails before any work
        memory=args.memory,
        quiet=args.quiet,
        verbose=args.verbose,
    )
    started, started_ns = time.monotonic(), time.time_ns()
    workers = start_workers_early(args)
    try:
        state = survey_for(args)
        report_rejected(state.plan, state.chosen, args.skip_rejected)
        if args.require_gpu and state.skipped:
            why = state.why_skipped(state.skipped[0])
            raise GpuError(f"--require-gpu: {len(state.skipped)} cells cannot be built: {why}")
        if args.dry_run or args.check:
            print_pending(state, sys.stdout)
            if args.check and (state.to_build or state.removed):
                raise Stale(f"{len(state.to_build) + len(state.removed)} cells out of date")
            return 0
        from matrix.build.run import build, needs_writing, start_workers

        if not needs_writing(state):
            said = "" if args.quiet else noop_text(state)
            sys.stdout.write(said)
            state.stamps.save()
            if getattr(args, "memo_argv", None):
                from matrix.lockfile.noop_memo import remember

                remember(args.memo_argv, state, said, started_ns)
            return 0
        settings = replace(settings, cache=cache_of(args, state.plan.manifest.cache))
        if workers is None and settings.cache is None:  # with a cache: once the hits are known
            workers = start_workers(settings, state)
        outcomes = build(state, settings, workers, resurvey=lambda: survey_for(args))
    finally:
        if workers is not None:
            workers.shutdown()  # safe twice: the executor shuts the pools it used
    from matrix.build.executor import Status
    from matrix.build.progress import print_summary

    print_summary(outcomes, time.monotonic() - started, args.quiet)
    done = (Status.BUILT, Status.FETCHED, Status.UP_TO_DATE)
    if getattr(args, "memo_argv", None) and len(outcomes) == len(state.freshness.cells) and \
            all(o.status in done for o in outcomes):
        from matrix.lockfile.noop_memo import remember

        # What the next run would find: every cell up to date.
        remember(args.memo_argv, state, up_to_date_line(len(outcomes)), started_ns)
    return 1 if any(o.status in (Status.FAILED, Status.NOT_STARTED) for o in outcomes) else 0


def start_workers_early(args: argparse.Namespace) -> Pool | None:
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
    from matrix.build.run import cpu_pool

    return cpu_pool(args.jobs, args.timeout, [started] if started else [])


def _early(args: argparse.Namespace) -> bool:
    if args.executor != "local" or args.dry_run or args.check or args.pool == "gpu":
        return False
    if args.jobs > (os.cpu_count() or 1):
        return False
    manifest = str(resolve_manifest(args.manifest))
    lock = args.output or head_start.default_lock(manifest)
    return head_start.build_likely(manifest, lock, args.force)


def scheduler(args: argparse.Namespace) -> str | None:
    if args.executor == "local":
        if args.scheduler:
            raise UsageError("--scheduler goes with --executor dask")
        return None
    if not args.scheduler:
        raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT")
    if args.memory is not None:
        raise UsageError("--memory is the local budget; a Dask worker states its own: "
                         "dask worker SCHEDULER --resources MEMORY=48e9")
    return str(args.scheduler)


def noop_text(state: Survey) -> str:
    skipped = [f"skipped {s.cell.id}: {state.why_skipped(s)}\n" for s in state.skipped]
    return up_to_date_line(len(state.freshness.up_to_date)) + "".join(skipped)


def up_to_date_line(cells: int) -> str:
    return f"{cells} cell{'' if cells == 1 else 's'} up to date\n"


def print_pending(state: Survey, out: TextIO) -> None:
    for pending in state.to_build:
        print(f"would build {pending.cell.id}: {', '.join(pending.reasons)}", file=out)
    for skipped in state.skipped:
        print(f"would skip {skipped.cell.id}: {state.why_skipped(skipped)}", file=out)
    for cell_id in state.removed:
        print(f"would remove {cell_id} from the lock: removed from the manifest", file=out)
    fresh = len(state.freshness.up_to_date)
    print(
        f"{len(state.to_build)} to build, {fresh} up to date, {len(state.skipped)} skipped, "
        f"{len(state.removed)} to remove",
        file=out,
    )
