"""The rules table against the real TensorRT-RTX builder.

Each small model is built for every single CC and a few CC sets on this CPU-only machine; the
planner must say `build` exactly when the library builds, and a built engine's header must
name exactly the CCs the planner expects. A new library release that moves a rule fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matrix.build.engine_header import read_header
from matrix.facts.onnx_inspect import inspect_model
from matrix.facts.types import ModelFacts
from matrix.manifest.types import Target
from matrix.plan.planner import expected_mask, make_plan
from matrix.plan.types import Verdict
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
    assert parser.parse_from_file(str(path)), [
        parser.get_error(i) for i in range(parser.num_errors)
    ]
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
