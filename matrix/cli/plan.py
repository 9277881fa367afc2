"""`rtx-matrix plan`: expand the manifest and explain every cell; builds nothing."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from matrix.cli.common import add_manifest_arg, report_rejected
from matrix.errors import UsageError
from matrix.plan.load import load_plan, resolve_manifest

if TYPE_CHECKING:
    from matrix.plan.types import Plan

FORMATS = ("table", "json", "markdown")


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
    add_manifest_arg(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default), json, or markdown: a grid of models by targets for a "
        "pull-request comment or $GITHUB_STEP_SUMMARY",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    parser.add_argument(
        "--skip-rejected",
        action="store_true",
        help="report rejected cells as warnings and exit 0",
    )
    ci = parser.add_argument_group("CI shards")
    ci.add_argument(
        "--github-matrix",
        action="store_true",
        help='print a GitHub Actions job matrix ({"include": [...]}, one job per shard)',
    )
    ci.add_argument("--shards", type=int, default=4, metavar="N", help="CPU shards (default: 4)")
    ci.add_argument(
        "--gpu-shards", type=int, default=1, metavar="M", help="GPU shards (default: 1)"
    )
    ci.add_argument(
        "--shard-strategy",
        choices=("balanced", "hash"),
        default="balanced",
        help="how cells are spread over shards (default: balanced)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    plan = load_plan(resolve_manifest(args.manifest))
    from matrix.plan.report import plan_json, print_plan_table

    if args.github_matrix:
        print(github_matrix_line(plan, args))
    elif args.format == "json":
        print(plan_json(plan))
    elif args.format == "markdown":
        from matrix.plan.markdown import plan_markdown

        sys.stdout.write(plan_markdown(plan))
    else:
        print_plan_table(plan, sys.stdout)
    report_rejected(plan, None, args.skip_rejected)
    return 0


def github_matrix_line(plan: Plan, args: argparse.Namespace) -> str:
    from matrix.ci.github_matrix import github_matrix_json
    from matrix.lockfile.io import read_lock

    if args.shards < 1 or args.gpu_shards < 0:
        raise UsageError("--shards must be at least 1 and --gpu-shards at least 0")
    # The committed lock's build times balance the shards, exactly as `build --shard` will.
    previous = read_lock(plan.manifest.lock_path)
    return github_matrix_json(
        plan, args.shards, args.gpu_shards, previous=previous, strategy=args.shard_strategy
    )
