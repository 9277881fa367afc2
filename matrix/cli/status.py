"""`rtx-matrix status`: which cells are stale and why; `--check` for CI."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from matrix.cli.common import add_cache_args, add_manifest_args, cache_of, survey_for
from matrix.errors import Stale

if TYPE_CHECKING:
    from collections.abc import Mapping

    from matrix.engine_cache.report import CellEntry
    from matrix.lockfile.survey import Survey
    from matrix.manifest.types import CacheSpec


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="list stale cells and why (builds nothing)",
        description=(
            "Compare the plan with the lockfile and the engines on disk and list every cell "
            "that `build` would rebuild, with its reasons."
        ),
    )
    add_manifest_args(parser)
    parser.add_argument("--check", action="store_true", help="exit 1 when anything is stale")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    add_cache_args(parser, push=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = survey_for(args)
    cached = in_cache(state, cache_of(args, state.plan.manifest.cache))
    if args.json:
        print(json.dumps(status_json(state, cached), indent=2, sort_keys=True))
    else:
        print_status(state, cached)
    state.stamps.save()
    stale = len(state.freshness.stale) + len(state.removed)
    if args.check and stale:
        raise Stale(f"{stale} cells out of date")
    return 0


def in_cache(state: Survey, spec: CacheSpec | None) -> dict[str, CellEntry]:
    """What the engine cache holds for each stale cell; nothing asked when nothing is stale."""
    stale = state.freshness.stale
    if spec is None or not stale:
        return {}
    from matrix.build.progress import Display
    from matrix.engine_cache.report import cell_entries
    from matrix.engine_cache.session import open_session

    session = open_session(spec, Display().warn)
    if session is None:
        return {}
    return {entry.cell_id: entry for entry in cell_entries(session, state, stale)}


def status_json(state: Survey, cached: Mapping[str, CellEntry] | None = None) -> dict[str, Any]:
    from matrix.lockfile.freshness import as_json

    cached = cached or {}
    data = as_json(state.freshness)
    data["gpu_missing"] = state.gpu_missing
    for cell, fresh in zip(data["cells"], state.freshness.cells, strict=True):
        cell["needs_gpu"] = fresh.cell.needs_gpu
        entry = cached.get(fresh.cell.id)
        if entry is not None:
            cell["cache"] = {"state": entry.state, "size": entry.size, "detail": entry.detail}
    return data


def print_status(state: Survey, cached: Mapping[str, CellEntry] | None = None) -> None:
    from matrix.lockfile.freshness import REMOVED

    cached = cached or {}
    for fresh in state.freshness.cells:
        if fresh.stale:
            gpu = ""
            if not state.buildable_here(fresh):
                gpu = f" [not buildable here, needs a GPU: {state.gpu_missing}]"
            entry = cached.get(fresh.cell.id)
            if entry is not None:
                from matrix.engine_cache.report import short_text

                gpu += f" [{short_text(entry)}]"
            print(f"{fresh.cell.id}: {', '.join(fresh.reasons)}{gpu}")
        for note in fresh.notes:
            print(f"{fresh.cell.id}: {note}")
    for cell_id in state.removed:
        print(f"{cell_id}: {REMOVED}")
    stale, total = len(state.freshness.stale), len(state.freshness.cells)
    removed = f", {len(state.removed)} removed" if state.removed else ""
    print(f"{total - stale} of {total} cells up to date, {stale} stale{removed}")
