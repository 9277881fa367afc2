"""`rtx-matrix lock merge A.lock B.lock ... -o LOCK`: union the lockfiles of sharded builds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matrix.lockfile.merge import CONFLICT_POLICIES


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("lock", help="operate on lockfiles (merge shard locks)")
    actions = parser.add_subparsers(dest="lock_command", metavar="ACTION", required=True)
    merge = actions.add_parser(
        "merge",
        help="union the lockfiles written by `build --shard K/N` into one",
        description=(
            "Union shard lockfiles. All must come from the same plan and TensorRT-RTX version. "
            "Engine and model paths are rebased to the output's folder; the output is sorted "
            "and written atomically, so the merge is order-independent and idempotent. It "
            "reads locks only, not the engines: after it, `rtx-matrix cache pull` brings "
            "them and `status` says which are missing."
        ),
    )
    merge.add_argument("inputs", nargs="+", type=Path, metavar="LOCK", help="shard lockfiles")
    merge.add_argument("-o", "--output", type=Path, required=True, help="merged lockfile")
    merge.add_argument(
        "--on-conflict", choices=CONFLICT_POLICIES, default="error",
        help="a cell with different engines in two inputs: fail (default), or keep the "
             "first or last input's entry in argument order",
    )
    merge.add_argument(
        "--allow-partial", action="store_true",
        help="merge even when some cells of the plan were built by no input",
    )
    merge.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    merge.set_defaults(run=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from matrix.lockfile.merge import merge_files

    merged = merge_files(args.inputs, args.output, args.on_conflict, args.allow_partial)
    if not args.quiet:
        missing = len(set(merged.plan.cells) - set(merged.engines))
        note = f" ({missing} plan cells not built)" if missing else ""
        print(f"merged {len(args.inputs)} lockfiles: {len(merged.engines)} engines{note} "
              f"-> {args.output}")
    return 0
