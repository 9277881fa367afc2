"""Arguments and set-up that several subcommands share."""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from matrix.plan.load import DEFAULT_MANIFEST, resolve_manifest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matrix.lockfile.survey import Scope, Survey
    from matrix.manifest.types import CacheSpec
    from matrix.plan.types import Cell, Plan


def add_manifest_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", nargs="?", help=f"manifest file (default: {DEFAULT_MANIFEST})")


def add_manifest_args(parser: argparse.ArgumentParser) -> None:
    """The manifest and `--verify`, for the commands that compare engines with the lock."""
    add_manifest_arg(parser)
    parser.add_argument(
        "--verify", action="store_true", help="hash every engine instead of trusting size and mtime"
    )


def add_cache_args(parser: argparse.ArgumentParser, push: bool = True) -> None:
    """`--cache URL` and `--no-cache` (and `--push/--no-push` for commands that build)."""
    group = parser.add_argument_group("engine cache")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--cache",
        metavar="URL",
        help="engine cache to use: a folder or an fsspec URL (s3://, gs://, az://, https://); "
        "overrides the manifest's cache: and RTX_MATRIX_CACHE",
    )
    choice.add_argument("--no-cache", action="store_true", help="use no engine cache")
    if push:
        group.add_argument(
            "--push",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="upload the engines built here to the cache (default: the manifest's "
            "cache.push, or RTX_MATRIX_CACHE_PUSH; never for https://)",
        )


def cache_of(args: argparse.Namespace, manifest: CacheSpec | None) -> CacheSpec | None:
    """The engine cache this command uses (`matrix.engine_cache.config.choose_cache`)."""
    from matrix.engine_cache.config import choose_cache

    return choose_cache(
        manifest,
        url=getattr(args, "cache", None),
        disabled=getattr(args, "no_cache", False),
        push=getattr(args, "push", None),
    )


def scope_of(args: argparse.Namespace) -> Scope:
    from matrix.lockfile.survey import Scope

    return Scope(
        patterns=tuple(getattr(args, "cells", ()) or ()),
        shard=getattr(args, "shard", None),
        pool=getattr(args, "pool", None),
        shard_strategy=getattr(args, "shard_strategy", "balanced"),
    )


def survey_for(args: argparse.Namespace) -> Survey:
    """`survey` with what this command's arguments say (status has fewer than build)."""
    from matrix.lockfile.survey import survey

    with collector_paused():
        return survey(
            resolve_manifest(args.manifest),
            scope_of(args),
            verify=args.verify,
            force=getattr(args, "force", False),
            device=getattr(args, "device", None),
            lock_output=getattr(args, "output", None),
            cluster=getattr(args, "executor", "local") == "dask",
        )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused: a survey makes ten or so objects per cell,
    none in a cycle, and the collector's passes over them cost a no-op over 10,000 cells a
    third of its time. They live as long as the run, so they are then frozen out of later
    passes too (`gc.freeze`). The CLI's own choice; the survey leaves the collector alone."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def report_rejected(plan: Plan, cells: Sequence[Cell] | None, skip: bool) -> None:
    """Rejected cells (of `cells`, or all): warnings when `skip`, else errors, the last one
    raised as PlanRejected for its exit code."""
    from matrix.errors import PlanRejected
    from matrix.plan.report import rejection_lines

    lines = rejection_lines(plan)
    if cells is not None:
        ids = {cell.id for cell in cells}
        lines = [line for line in lines if line.split(":", 1)[0] in ids]
    if not lines:
        return
    label = "warning" if skip else "error"
    for line in lines if skip else lines[:-1]:
        print(f"{label}: {line}", file=sys.stderr)
    if not skip:
        raise PlanRejected(lines[-1])
