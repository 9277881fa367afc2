"""`rtx-matrix prepare DIR`: what an application does on first launch, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from matrix.errors import UsageError

DESCRIPTION = """\
Select each family's engine for this machine's GPU (as `rtx-matrix select` does) and make
it ready to load: a full engine is used from the bundle as it is; a weightless one is
refitted from its ONNX model (in the bundle with `bundle --with-onnx`, else --onnx
MODEL=PATH), checked with TensorRT-RTX, and saved in a per-user cache keyed by the engine,
the GPU, the driver and the TensorRT-RTX version. Later runs reuse it; a damaged cached
engine is refitted again. Prints each family's engine path. Refit needs a GPU TensorRT-RTX
supports (exit 3 without one).
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="ready the engines of a bundle for this GPU (refits weightless ones, cached)",
        description=DESCRIPTION,
    )
    parser.add_argument("bundle", metavar="DIR", help="a folder written by `rtx-matrix bundle`")
    parser.add_argument("--gpu", type=int, metavar="N", help="GPU index as nvidia-smi shows it")
    parser.add_argument(
        "--cache-dir", metavar="DIR",
        help="where refitted engines are kept (default: the per-user rtx-matrix cache)",
    )
    parser.add_argument(
        "--onnx", action="append", default=[], metavar="MODEL=PATH",
        help="the ONNX file of a model whose bundle does not carry it (repeatable)",
    )
    parser.add_argument(
        "--wait", type=float, default=None, metavar="S",
        help="seconds to wait for another process refitting the same engine (default: no limit)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import math

    from matrix import gpu
    from matrix.runtime import prepare
    from matrix.runtime.report import prepared_json, prepared_lines

    models = _models(args.onnx)
    inventory = gpu.discover()
    chosen = inventory.pick() if args.gpu is None else inventory.at(args.gpu, "--gpu")
    if chosen.supported:
        # Before tensorrt_rtx starts CUDA: the chosen GPU becomes this process's device 0.
        os.environ.update(gpu.cuda_env(chosen))
    prepared = prepare(
        Path(args.bundle), chosen, args.cache_dir, onnx=models,
        wait=math.inf if args.wait is None else args.wait,
        on_progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(prepared_json(prepared), indent=2, sort_keys=True))
    else:
        print("\n".join(prepared_lines(prepared)))
    return 1 if prepared.missing else 0


def _models(pairs: list[str]) -> dict[str, Path]:
    models: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--onnx {pair!r}: write it as MODEL=PATH")
        models[name] = Path(path)
    return models
