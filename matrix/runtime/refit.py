"""Refit a weightless engine from its ONNX model: the one copy of the library calls, used by
`rtx-matrix refit` (`matrix.build.refit`) and by first-launch `prepare`.

The steps are the TensorRT-RTX guide's (CPU-only AOT and TensorRT-RTX engines, "Refitting a
weightless engine directly with ONNX models"): deserialize, `Refitter`, `OnnxParserRefitter`
`.refit_from_file`, `refit_cuda_engine`, then serialize with a config whose flags leave out
`EXCLUDE_WEIGHTS`. Deserializing needs a CUDA device, so this runs only on a supported GPU,
CUDA's current device of the calling process; tensorrt_rtx is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matrix.errors import InputError, MatrixError, Problem


class RefitFailed(MatrixError):
    """TensorRT-RTX could not refit the engine; the message is the library's own."""

    exit_code = 1


def refit_blob(engine_path: Path, onnx: Path) -> memoryview:
    """The full engine: `engine_path` (weightless) with the weights of `onnx` put back.

    InputError when the engine already holds its weights, RefitFailed with the library's
    error otherwise.
    """
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


def invalid_here(blob: bytes | memoryview) -> str | None:
    """Why TensorRT-RTX would not load `blob` on this process's GPU, or None when it would.

    `Runtime.get_engine_validity` reads the engine's header against the GPU, driver and
    library (on a CPU-only host it cannot tell more than a malformed file: it needs a GPU).
    SUBOPTIMAL (the engine runs, perhaps slower than one built for this GPU) counts as valid.
    """
    import tensorrt_rtx as trt

    logger = _make_logger(trt)
    validity, diagnostics = trt.Runtime(logger).get_engine_validity(blob)
    if validity != trt.EngineValidity.INVALID:
        return None
    reasons = [
        name.lower().replace("_", " ")
        for name, flag in trt.EngineInvalidityDiagnostics.__members__.items()
        if int(diagnostics) & int(flag)
    ]
    return ", ".join(reasons) or logger.first()

