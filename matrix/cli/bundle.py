"""`rtx-matrix bundle`: put the engines an application ships into one folder with bundle.json;
`rtx-matrix bundle verify DIR`: check every file of a bundle against it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from matrix.cli.common import add_manifest_arg
from matrix.errors import UsageError

DESCRIPTION = """\
Hard-link (or, across file systems, copy) the engines the lockfile names into DIR, with
bundle.json: per engine its cell, model, family, the GPUs it runs on, weightless or not, the
model's dtypes, sha256, size, TensorRT-RTX version, I/O tensors, and for weightless engines
what refit needs (--with-onnx also copies the ONNX model and its external data). CELLS
(ids, model names or globs) narrow the choice. Cells out of date are refused (exit 1):
build first. DIR must be new, empty or an earlier bundle. bundle.json is written last, so
an interrupted bundle never verifies.

`rtx-matrix bundle verify DIR` checks every file bundle.json lists (size and sha256) and
exits 1 naming each missing or modified one.
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help="copy the locked engines an application ships into a folder with bundle.json",
        description=DESCRIPTION,
        usage=(
            "rtx-matrix bundle [MANIFEST] -o DIR [CELLS...] [--with-onnx] [--copy] [--lock LOCK]\n"
            "       rtx-matrix bundle verify DIR [--json]"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_manifest_arg(parser)
    parser.add_argument("cells", nargs="*", help="cell ids, model names or globs (default: all)")
    parser.add_argument("-o", "--output", metavar="DIR", help="the bundle folder")
    parser.add_argument(
        "--with-onnx", action="store_true",
        help="copy the ONNX model (and external data) of every weightless engine, for refit",
    )
    parser.add_argument("--copy", action="store_true", help="copy files, never hard-link")
    parser.add_argument("--lock", metavar="LOCK", help="lockfile (default: the manifest's)")
    parser.add_argument("--json", action="store_true", help="verify: print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.manifest == "verify":
        return run_verify(args)
    if not args.output:
        raise UsageError("bundle needs -o DIR, the folder to write the bundle to")
    from matrix.bundle.make import make_bundle
    from matrix.plan.load import load_plan, resolve_manifest
    from matrix.runtime.report import human_bytes

    plan = load_plan(resolve_manifest(args.manifest))
    lock = Path(os.path.abspath(args.lock or plan.manifest.lock_path))
    report = make_bundle(
        plan, lock, Path(args.output), args.cells, with_onnx=args.with_onnx, copy=args.copy,
        on_placed=None if args.quiet else lambda p: print(f"{p.how} {p.path} "
                                                          f"({human_bytes(p.size)})"),
    )
    if report.left_out:
        print(f"left out, the lock has no engine for them: {', '.join(report.left_out)}")
    for relative in report.removed:
        print(f"removed {relative} (no longer in the bundle)")
    engines = len(report.bundle.engines)
    others = len(report.placed) - engines
    onnx = f" and {others} ONNX file{'s' * (others != 1)}" if others else ""
    total = human_bytes(sum(p.size for p in report.placed))
    print(f"bundled {engines} engine{'s' * (engines != 1)}{onnx} ({total}) into {args.output}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    if len(args.cells) != 1 or args.output:
        raise UsageError("usage: rtx-matrix bundle verify DIR")
    from matrix.runtime.bundle import BundleDamaged, verify_bundle
    from matrix.runtime.report import verified_line

    verified = verify_bundle(Path(args.cells[0]))
    if args.json:
        problems = [str(problem) for problem in verified.problems]
        print(json.dumps({"ok": verified.ok, "files": verified.files, "problems": problems},
                         indent=2))
    if not verified.ok:
        raise BundleDamaged(verified.problems)
    if not args.json:
        print(verified_line(verified))
    return 0
