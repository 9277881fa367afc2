"""`rtx-matrix select DIR`: which engine of a bundle each family loads on a GPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Show, for each family of the bundle in DIR, the engine a GPU loads: the first model in
manifest order with an engine that runs on its compute capability; among that model's
engines, one built for exactly that CC, then a target set containing it, then `default`;
a full engine before a weightless one. The GPU is this machine's first TensorRT-RTX GPU,
or --gpu N (as nvidia-smi numbers them), or a CC given with --cc. Exit 1 when a family has
no engine for it; exit 3 for a GPU TensorRT-RTX does not support.
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "select",
        help="show which engine of a bundle each family loads on a GPU",
        description=DESCRIPTION,
    )
    parser.add_argument("bundle", metavar="DIR", help="a folder written by `rtx-matrix bundle`")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--cc", metavar="CC", help='a compute capability: 8.6, sm86, ...')
    which.add_argument("--gpu", type=int, metavar="N", help="GPU index as nvidia-smi shows it")
    parser.add_argument("--json", action="store_true", help="print the selection as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from matrix.runtime import select
    from matrix.runtime.report import selection_json, selection_lines

    selection = select(Path(args.bundle), args.cc or _gpu(args.gpu))
    if args.json:
        print(json.dumps(selection_json(selection), indent=2, sort_keys=True))
    else:
        print("\n".join(selection_lines(selection)))
    return 1 if selection.missing else 0


def _gpu(device: int | None) -> Any:
    """This machine's GPU: `--gpu N`, or the first TensorRT-RTX supports (GpuError if none).
    An unsupported `--gpu N` is returned as is: `select` refuses it in `build`'s words."""
    from matrix import gpu

    inventory = gpu.discover()
    return inventory.pick() if device is None else inventory.at(device, "--gpu")
