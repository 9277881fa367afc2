"""`rtx-matrix plan`: expand the manifest and explain every cell; builds nothing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from matrix.errors import PlanRejected
from matrix.pipeline import DEFAULT_MANIFEST, load_plan, resolve_manifest


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show every cell of the build matrix and its verdict (builds nothing)",
        description=(
            "Expand the manifest into its build matrix and explain every cell: build, "
            "needs-gpu, rejected (with the rule) or excluded, and the GPUs the engine runs on. "
            "Exit 1 when a cell is rejected."
        ),
    )
    parser.add_argument("manifest", nargs="?", help=f"manifest file (default: {DEFAULT_MANIFEST})")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--skip-rejected",
        action="store_true",
        help="report rejected cells as warnings and exit 0",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    plan = load_plan(resolve_manifest(args.manifest))
    from matrix.plan_report import plan_json, print_plan_table, rejection_lines

    if args.json:
        print(plan_json(plan))
    else:
        print_plan_table(plan, sys.stdout)
    rejections = rejection_lines(plan)
    if not rejections:
        return 0
    if args.skip_rejected:
        for line in rejections:
            print(f"warning: {line}", file=sys.stderr)
        return 0
    for line in rejections[:-1]:
        print(f"error: {line}", file=sys.stderr)
    raise PlanRejected(rejections[-1])
