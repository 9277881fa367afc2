"""`rtx-matrix status`: which cells are stale and why; `--check` for CI."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from matrix.cli.common import add_manifest_args, survey_for
from matrix.errors import Stale

if TYPE_CHECKING:
    from matrix.lockfile.survey import Survey


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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    state = survey_for(args)
    if args.json:
        print(json.dumps(status_json(state), indent=2, sort_keys=True))
    else:
        print_status(state)
    state.stamps.save()
    stale = len(state.freshness.stale) + len(state.removed)
    if args.check and stale:
        raise Stale(f"{stale} cells out of date")
    return 0


def status_json(state: Survey) -> dict[str, Any]:
    from matrix.lockfile.freshness import as_json

    data = as_json(state.freshness)
    data["gpu_missing"] = state.gpu_missing
    for cell, fresh in zip(data["cells"], state.freshness.cells, strict=True):
        cell["needs_gpu"] = fresh.cell.needs_gpu
    return data


def print_status(state: Survey) -> None:
    from matrix.lockfile.freshness import REMOVED

    for fresh in state.freshness.cells:
        if fresh.stale:
            gpu = ""
            if not state.buildable_here(fresh):
                gpu = f" [not buildable here, needs a GPU: {state.gpu_missing}]"
            print(f"{fresh.cell.id}: {', '.join(fresh.reasons)}{gpu}")
        for note in fresh.notes:
            print(f"{fresh.cell.id}: {note}")
    for cell_id in state.removed:
        print(f"{cell_id}: {REMOVED}")
    stale, total = len(state.freshness.stale), len(state.freshness.cells)
    removed = f", {len(state.removed)} removed" if state.removed else ""
    print(f"{total - stale} of {total} cells up to date, {stale} stale{removed}")
