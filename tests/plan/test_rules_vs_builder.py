"""The rules table against the real TensorRT-RTX builder.

Each small model is built for every single CC and a few CC sets on this CPU-only machine; the
planner must say `build` exactly when the library builds, and a built engine's header must
name exactly the CCs the planner expects. A new library release that moves a rule fails here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto

from matrix.build.engine_header import read_header
from matrix.facts.onnx_inspect import inspect_model
from matrix.facts.parser_check import check_models
from matrix.facts.types import ModelFacts
from matrix.manifest.types import Target
from matrix.plan import rules as R
from matrix.plan.planner import expected_mask, make_plan
from matrix.plan.types import Verdict
from matrix.versions import installed_tensorrt_rtx
from tests import modelgen
from tests.factories import manifest, model, target

trt: Any = pytest.importorskip("tensorrt_rtx")

MODELS: dict[str, Callable[[Path], Path]] = {
    "fp32-matmul": modelgen.mlp_fp32,
    "fp32-conv": modelgen.conv_fp32,
    "fp16-matmul": modelgen.matmul_fp16,
    "fp16-conv": modelgen.conv_fp16,
    "bf16-matmul": modelgen.matmul_bf16,
    "fp8-matmul": modelgen.fp8_qdq_matmul,
    "fp4-matmul": modelgen.fp4_weights_matmul,
    "int4-matmul": modelgen.int4_weights_matmul,
    "int8-conv": modelgen.int8_qdq_conv,
    "int8-matmul": modelgen.int8_qdq_matmul,
}

TARGETS: dict[str, Target] = {
    "default": target("default"),
    **{cc: target(cc) for cc in ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")},
    "sm80+sm89": target("sm80+sm89", "sm80", "sm89"),
    "sm75+sm86": target("sm75+sm86", "sm75", "sm86"),
    "sm120+sm121": target("sm120+sm121", "sm120", "sm121"),
}


class ErrorLogger(trt.ILogger):  # type: ignore[misc]
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity: object, msg: str) -> None:
        if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
            self.errors.append(msg)


def real_build(path: Path, tgt: Target) -> tuple[bytes | None, str]:
    logger = ErrorLogger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return None, "parse: " + " | ".join(
            str(parser.get_error(i)) for i in range(parser.num_errors)
        )
    config = builder.create_builder_config()
    if tgt.ccs:
        config.num_compute_capabilities = len(tgt.ccs)
        for index, cc in enumerate(tgt.ccs):
            assert config.set_compute_capability(getattr(trt.ComputeCapability, cc.trt_name), index)
    blob = builder.build_serialized_network(network, config)
    return (bytes(blob) if blob is not None else None), " | ".join(logger.errors)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ModelFacts]]:
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for name, make in MODELS.items():
        path = make(folder / f"{name}.onnx")
        made[name] = (path, inspect_model(path))
    return made


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("model_name", MODELS)
def test_planner_agrees_with_real_builder(
    models: dict[str, tuple[Path, ModelFacts]], model_name: str, target_name: str
) -> None:
    path, facts = models[model_name]
    tgt = TARGETS[target_name]
    cell = make_plan(manifest(model(targets=(tgt,))), {"m": facts}).cells[0]
    engine, error = real_build(path, tgt)
    said = f"planner: {cell.verdict} {[r.message for r in cell.errors]}; builder: {error!r}"
    assert (cell.verdict is Verdict.BUILD) == (engine is not None), said
    if engine is not None:
        assert read_header(engine).mask == expected_mask(cell), said


# Every rule added for TensorRT-RTX 1.7 beyond the dtype table, each with the model that trips
# it and, beside it, the nearest model that builds (so a rule that grows too wide fails too).
# Turing rules are built for default, sm75 and sm86; rules that hold everywhere for two
# targets; models the parser refuses are parsed once (the builder never gets further).
TURING = ("default", "sm75", "sm86")
EVERYWHERE = ("default", "sm120")
PARSE_ONLY = ("default",)
F16, F64 = TensorProto.FLOAT16, TensorProto.DOUBLE

CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...], str | None]] = {
    "conv3d-fp32": (modelgen.conv3d, TURING, R.TURING_FP32_CONV3D),
    "conv3d-fp64": (partial(modelgen.conv3d, elem=F64), ("sm75",), R.TURING_FP32_CONV3D),
    "deconv3d-fp32": (partial(modelgen.conv3d, transpose=True), TURING, R.TURING_FP32_CONV3D),
    "conv3d-fp16": (partial(modelgen.conv3d, elem=F16), ("sm75",), None),
    "einsum-fp32": (modelgen.einsum, TURING, R.TURING_FP32_GEMM),
    "einsum-one-operand": (partial(modelgen.einsum, equation="ij->ji"), ("sm75",), None),
    "matmul-fp64": (modelgen.matmul, TURING, R.TURING_FP32_GEMM),
    "lstm-fp32": (modelgen.recurrent, TURING, R.TURING_FP32_GEMM),
    "gru-fp32": (partial(modelgen.recurrent, op="GRU"), ("sm75",), R.TURING_FP32_GEMM),
    "rnn-fp32": (partial(modelgen.recurrent, op="RNN"), ("sm75",), R.TURING_FP32_GEMM),
    "lstm-fp16": (partial(modelgen.recurrent, elem=F16), ("sm75",), None),
    "matmul-in-fp16-casts": (modelgen.fp32_matmul_in_fp16_casts, ("sm75",), None),
    "shape-matmul": (modelgen.shape_matmul, ("sm75",), None),
    "cast-to-fp8": (modelgen.cast_output, EVERYWHERE, R.HW_DTYPE_OUTSIDE_QDQ),
    "cast-to-int4": (
        partial(modelgen.cast_output, elem=TensorProto.INT4),
        ("sm86",),
        R.HW_DTYPE_OUTSIDE_QDQ,
    ),
    "fp8-io": (modelgen.quantized_io, ("sm86", "sm89"), None),
    "int8-via-transpose": (modelgen.quantized_weights_via, EVERYWHERE, R.QUANTIZED_CONSTANT),
    "int8-scalar": (modelgen.dequantized_constant, EVERYWHERE, R.QUANTIZED_SCALAR),
    "int8-one-element": (partial(modelgen.dequantized_constant, shape=(1,)), ("sm75",), None),
    "fp8e5m2-weights": (modelgen.dq_weights_matmul, PARSE_ONLY, R.DTYPE_UNSUPPORTED),
    "int2-weights": (
        partial(modelgen.dq_weights_matmul, elem=TensorProto.INT2),
        PARSE_ONLY,
        R.DTYPE_UNSUPPORTED,
    ),
    "uint4-weights": (
        partial(modelgen.dq_weights_matmul, elem=TensorProto.UINT4, opset=21),
        PARSE_ONLY,
        R.DTYPE_UNSUPPORTED,
    ),
    "qdq-zero-point": (partial(modelgen.qdq_conv, zero_point=3), PARSE_ONLY, R.QDQ_ZERO_POINT),
    "qdq-int32-bias": (partial(modelgen.qdq_conv, bias="int32"), PARSE_ONLY, R.QDQ_INT32_BIAS),
    "qdq-uint8-weights": (
        partial(modelgen.qdq_conv, weights=TensorProto.UINT8),
        PARSE_ONLY,
        R.QDQ_UINT8,
    ),
    "qdq-negative-scale": (partial(modelgen.qdq_conv, scale=-0.01), PARSE_ONLY, R.QDQ_SCALE),
    "qdq-uint8-activations": (
        partial(modelgen.qdq_conv, act=TensorProto.UINT8),
        ("sm75",),
        None,
    ),
    "mixed-matmul": (modelgen.mixed_matmul, PARSE_ONLY, R.MIXED_INPUT_TYPES),
    "qlinearmatmul": (modelgen.single_op, PARSE_ONLY, R.QDQ_ONLY),
    "dilated-maxpool": (
        partial(modelgen.single_op, op="MaxPool"),
        PARSE_ONLY,
        R.PARSER_UNSUPPORTED,
    ),
    "opset6-broadcast": (partial(modelgen.single_op, op="Add"), PARSE_ONLY, R.PARSER_UNSUPPORTED),
}
ALL_TARGETS = ("default", "sm75", "sm80", "sm86", "sm89", "sm120")


@pytest.fixture(scope="module")
def case_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ModelFacts]]:
    """Each case's model with its facts, the parser's verdict included (one real check)."""
    folder = tmp_path_factory.mktemp("cases")
    paths = {name: make(folder / f"{name}.onnx") for name, (make, _, _) in CASES.items()}
    checks = check_models(list(paths.values()), installed_tensorrt_rtx(), jobs=1)
    return {
        name: (path, dataclasses.replace(inspect_model(path), parser=checks[path]))
        for name, path in paths.items()
    }


@pytest.mark.parametrize(
    ("case", "target_name"), [(c, t) for c, (_, targets, _) in CASES.items() for t in targets]
)
def test_new_rules_agree_with_real_builder(
    case_models: dict[str, tuple[Path, ModelFacts]], case: str, target_name: str
) -> None:
    path, facts = case_models[case]
    rule = CASES[case][2]
    cells = {
        name: make_plan(manifest(model(targets=(target(name),))), {"m": facts}).cells[0]
        for name in ALL_TARGETS
    }
    cell = cells[target_name]
    engine, error = real_build(path, target(target_name))
    said = f"planner: {cell.verdict} {[r.message for r in cell.errors]}; builder: {error!r}"
    assert (cell.verdict is Verdict.BUILD) == (engine is not None), said
    if rule is None or cell.verdict is Verdict.BUILD:
        return
    assert rule in {r.rule for r in cell.errors}, said
    if error.startswith("parse:"):  # the parser refuses it: so must the plan, for every target
        assert all(c.verdict is Verdict.REJECTED for c in cells.values()), said
