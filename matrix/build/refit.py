"""Refit a weightless engine from its ONNX model and save it as a full engine.

The steps are the TensorRT-RTX guide's (CPU-only AOT and TensorRT-RTX engines, "Refitting a
weightless engine directly with ONNX models"): deserialize, `Refitter`, `OnnxParserRefitter`
`.refit_from_file`, `refit_cuda_engine`, then serialize with a config whose flags leave out
`EXCLUDE_WEIGHTS`. Deserializing needs a CUDA device, so this only runs on a supported GPU;
callers check that with `matrix.gpu` before calling `refit_engine` (tensorrt_rtx is imported
only inside it).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.atomic import sha256_file, write_atomic
from matrix.errors import InputError, MatrixError, Problem


class RefitFailed(MatrixError):
    """TensorRT-RTX could not refit the engine; the message is the library's own."""

    exit_code = 1


@dataclass(frozen=True)
class RefitResult:
    output: Path
    size: int
    sha256: str
    seconds: float


def default_output(engine: Path) -> Path:
    """`engines/m@sm89+weightless.engine` -> `engines/m@sm89+weightless.full.engine`."""
    return engine.with_name(f"{engine.stem}.full.engine")


def check_inputs(engine: Path, onnx: Path, output: Path) -> None:
    """Every path problem at once, as an InputError (exit 2); nothing is read past a stat."""
    problems = [
        *_file_problems(engine, "engine"),
        *_file_problems(onnx, "ONNX model"),
        *_output_problems(output, engine),
    ]
    if problems:
        raise InputError(problems)


def _file_problems(path: Path, what: str) -> list[Problem]:
    if not path.exists():
        return [Problem(str(path), f"no such {what}")]
    if not path.is_file():
        return [Problem(str(path), f"the {what} is not a file")]
    if path.stat().st_size == 0:
        return [Problem(str(path), f"the {what} is empty")]
    return []


def _output_problems(output: Path, engine: Path) -> list[Problem]:
    if output.resolve() == engine.resolve():
        return [Problem(str(output), "the output would overwrite the weightless engine")]
    if not output.parent.is_dir():
        return [Problem(str(output), f"no such folder: {output.parent}")]
    if output.is_dir():
        return [Problem(str(output), "the output is a folder")]
    return []


def refit_engine(engine: Path, onnx: Path, output: Path) -> RefitResult:
    """Refit `engine` with the weights of `onnx` and write the full engine to `output`.

    Needs a supported GPU as CUDA's current device. Raises InputError when the engine is not
    refittable, RefitFailed with the library's error otherwise. `output` is written through a
    temporary sibling and a rename: never half-written.
    """
    started = time.perf_counter()
    blob = _refit_with_library(engine, onnx)
    write_atomic(output, blob)
    digest = hashlib.sha256(blob).hexdigest()
    return RefitResult(output, len(blob), digest, time.perf_counter() - started)


def _refit_with_library(engine_path: Path, onnx: Path) -> memoryview:
    import tensorrt_rtx as trt

    logger = _make_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise RefitFailed(
            f"{engine_path}: TensorRT-RTX could not load the engine: {logger.first()}"
        )
    if not engine.refittable:
        raise InputError(
            [Problem(str(engine_path), "not a weightless engine: it already holds its weights")]
        )
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx)):
        raise RefitFailed(f"{onnx}: refit failed: {_parser_errors(parser_refitter, logger)}")
    missing = refitter.get_missing_weights()
    if missing:
        names = ", ".join(sorted(name or "<unnamed>" for name in missing))
        raise RefitFailed(f"{onnx}: the model does not set these engine weights: {names}")
    if not refitter.refit_cuda_engine():
        raise RefitFailed(f"{engine_path}: refit failed: {logger.first()}")
    return _serialize_with_weights(trt, engine, engine_path, logger)


def _serialize_with_weights(trt: Any, engine: Any, engine_path: Path, logger: Any) -> memoryview:
    # As the guide shows: start from the engine's own serialization flags (a stripped plan
    # has EXCLUDE_WEIGHTS set) and clear that one bit, so the refitted weights are written.
    config = engine.create_serialization_config()
    config.flags &= ~(1 << int(trt.SerializationFlag.EXCLUDE_WEIGHTS))
    blob = engine.serialize_with_config(config)
    if blob is None:
        raise RefitFailed(
            f"{engine_path}: could not serialize the refitted engine: {logger.first()}"
        )
    return memoryview(blob)


def _parser_errors(parser_refitter: Any, logger: Any) -> str:
    errors = [parser_refitter.get_error(i) for i in range(parser_refitter.num_errors)]
    if not errors:
        return str(logger.first())
    return "; ".join(f"{e.node_name() or e.node_operator() or 'model'}: {e.desc()}" for e in errors)


def _make_logger(trt: Any) -> Any:
    """An ILogger that keeps errors for our messages instead of printing the library's log."""

    class Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, message: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(message.strip())

        def first(self) -> str:
            # The first error is the cause; later ones are the library unwinding.
            return self.errors[0] if self.errors else "no error reported by the library"

    return Logger()


@dataclass(frozen=True)
class LockedEngine:
    """What `refit --lock` takes from one lock entry."""

    engine: Path
    onnx: Path
    graph_digest: str


def engine_from_lock(lock_path: Path, cell_id: str) -> LockedEngine:
    """The weightless engine and model a lock entry names, checked against the lock.

    InputError (exit 2) for a missing lock or cell, a full (not weightless) engine, or an
    engine file that is no longer the one the lock recorded.
    """
    from matrix.lockfile.io import read_lock
    from matrix.manifest.suggest import did_you_mean

    lock = read_lock(lock_path)
    if lock is None:
        raise InputError([Problem(str(lock_path), "no such lockfile")])
    entry = lock.engines.get(cell_id)
    if entry is None:
        hint = did_you_mean(cell_id, lock.engines)
        raise InputError([Problem(str(lock_path), f"no engine {cell_id!r} in the lock{hint}")])
    where = f"{lock_path}: {cell_id}"
    if not entry.weightless:
        raise InputError(f"{where}: not a weightless engine: {entry.path} holds its weights")
    root = lock_path.parent
    engine = root / entry.path
    if engine.is_file() and (
        engine.stat().st_size != entry.size or sha256_file(engine) != entry.sha256
    ):
        raise InputError(f"{where}: {engine} is not the engine the lock recorded; rebuild it")
    return LockedEngine(engine, root / entry.model.path, entry.model.graph_digest)


def check_graph_digest(onnx: Path, expected: str) -> None:
    """Refuse a model whose graph is not the one the weightless engine was built from.

    Only the graph matters: new weights are what refit is for.
    """
    from matrix.facts.cache import FactsCache
    from matrix.facts.onnx_inspect import ModelFileError

    try:
        actual = FactsCache().get(onnx).graph_digest
    except ModelFileError as error:
        raise InputError([Problem(str(onnx), error.reason)]) from None
    if actual != expected:
        raise InputError(
            [Problem(str(onnx), "the model's graph changed since the engine was built; rebuild it")]
        )
