"""`rtx-matrix refit`: turn a weightless engine into a full one on a supported GPU."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from matrix.errors import GpuError, UsageError

DESCRIPTION = """\
Refit a weightless engine with the weights of its ONNX model and save a full engine.
Either name the engine and the model (ENGINE --onnx MODEL), or a lockfile and a cell id
(--lock LOCKFILE CELL_ID): the lock gives both, and a model whose graph changed since the
build is refused. Needs a GPU that TensorRT-RTX supports (exit 3 without one).
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "refit",
        help="refit a weightless engine from its ONNX model (needs a GPU)",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "target", metavar="ENGINE|CELL_ID", help="weightless engine, or a cell id with --lock"
    )
    parser.add_argument("--onnx", metavar="MODEL", help="ONNX model holding the weights")
    parser.add_argument("--lock", metavar="LOCKFILE", help="take engine and model from this lock")
    parser.add_argument(
        "-o", "--output", metavar="FULL_ENGINE", help="default: <engine stem>.full.engine beside it"
    )
    parser.add_argument("--device", type=int, metavar="N", help="GPU index as nvidia-smi shows it")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from matrix import gpu
    from matrix.build import refit

    engine, onnx, graph_digest = _inputs(args)
    output = Path(args.output) if args.output else refit.default_output(engine)
    refit.check_inputs(engine, onnx, output)
    if graph_digest is not None:
        refit.check_graph_digest(onnx, graph_digest)
    try:
        chosen = gpu.discover().pick(args.device)
    except GpuError as error:
        raise GpuError(f"refit needs a GPU that TensorRT-RTX supports: {error}") from None
    # Before tensorrt_rtx starts CUDA: makes the chosen GPU this process's CUDA device 0.
    os.environ.update(gpu.cuda_env(chosen))
    result = refit.refit_engine(engine, onnx, output)
    print(
        f"refitted {engine} with {onnx} on {chosen.label}: "
        f"{result.output} ({result.size} bytes, {result.seconds:.2f} s)"
    )
    return 0


def _inputs(args: argparse.Namespace) -> tuple[Path, Path, str | None]:
    """(engine, model, graph digest to check or None) from either form of the command."""
    if args.lock:
        if args.onnx:
            raise UsageError("--onnx and --lock do not go together: the lock names the model")
        from matrix.build.refit import engine_from_lock

        locked = engine_from_lock(Path(args.lock), args.target)
        return locked.engine, locked.onnx, locked.graph_digest
    if not args.onnx:
        raise UsageError("refit ENGINE needs --onnx MODEL (or use --lock LOCKFILE CELL_ID)")
    return Path(args.target), Path(args.onnx), None
