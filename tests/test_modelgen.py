"""Every generated model against the real TensorRT-RTX builder, at the CCs docs/tensorrt-rtx.md
names.

The expected outcomes are docs/tensorrt-rtx.md's facts, measured with tensorrt-rtx 1.7.1.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import tensorrt_rtx as trt

from tests import modelgen

Gen = Callable[..., Path]


class _Errors(trt.ILogger):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        if severity <= trt.ILogger.Severity.ERROR:
            self.messages.append(msg)


def build(path: Path, ccs: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(built?, the builder's error text) for one real ahead-of-time build."""
    logger = _Errors()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return False, "parse: " + "; ".join(
            str(parser.get_error(i)) for i in range(parser.num_errors)
        )
    config = builder.create_builder_config()
    if ccs:
        config.num_compute_capabilities = len(ccs)
        for index, cc in enumerate(ccs):
            assert config.set_compute_capability(getattr(trt.ComputeCapability, cc), index)
    blob = builder.build_serialized_network(network, config)
    return blob is not None and blob.nbytes > 0, " | ".join(logger.messages)


FP32_GEMM = "FP32 GEMM is not supported"
NO_PROFILE = "no optimization profile has been defined"

# (generator, CCs, expected error fragment or None when it must build)
CASES: list[tuple[Gen, tuple[str, ...], str | None]] = [
    (modelgen.mlp_fp32, (), None),
    (modelgen.mlp_fp32, ("SM75",), FP32_GEMM),
    (modelgen.mlp_fp32, ("SM80", "SM86"), None),
    (modelgen.matmul_fp16, ("SM75",), None),
    (modelgen.conv_fp32, ("SM75",), None),
    (modelgen.conv_fp16, ("SM75",), None),
    (modelgen.matmul_bf16, ("SM75",), "HW-specific datatypes: b16"),
    (modelgen.matmul_bf16, ("SM80",), None),
    (modelgen.fp8_qdq_matmul, (), None),
    (modelgen.fp8_qdq_matmul, ("SM89",), None),
    (modelgen.fp8_qdq_matmul, ("SM120", "SM121"), None),
    (modelgen.fp8_qdq_matmul, ("SM86",), "HW-specific datatypes: fp8_e4m3"),
    (modelgen.fp8_qdq_matmul, ("SM80", "SM89"), "HW-specific datatypes: fp8_e4m3"),
    (modelgen.fp4_weights_matmul, (), None),
    (modelgen.fp4_weights_matmul, ("SM120",), None),
    (modelgen.fp4_weights_matmul, ("SM89",), "HW-specific datatypes: fp4_e2m1"),
    (modelgen.int4_weights_matmul, ("SM75",), "HW-specific datatypes: int4"),
    (modelgen.int4_weights_matmul, ("SM80",), None),
    (modelgen.int8_qdq_conv, ("SM75",), None),
    (modelgen.int8_qdq_matmul, ("SM75",), FP32_GEMM),
    (modelgen.int8_qdq_matmul, ("SM86",), None),
    (modelgen.dynamic_batch_mlp, (), NO_PROFILE),
    (modelgen.shape_input_model, (), NO_PROFILE),  # built with values in tests/build
    (modelgen.named_dims_model, (), NO_PROFILE),  # built with profiles in tests/plan
    # docs/tensorrt-rtx.md: *some* real models with `If` fail in the builder; this one builds.
    (modelgen.if_model, (), None),
    (modelgen.external_data_model, (), None),
]


@pytest.mark.parametrize(
    ("make", "ccs", "error"),
    CASES,
    ids=[f"{make.__name__}-{'+'.join(ccs) or 'default'}" for make, ccs, _ in CASES],
)
def test_builder_agrees_with_design(
    tmp_path: Path, make: Gen, ccs: tuple[str, ...], error: str | None
) -> None:
    built, log = build(make(tmp_path / "m.onnx"), ccs)
    if error is None:
        assert built, log
    else:
        assert not built
        assert error in log


def test_every_generator_is_built_here() -> None:
    generators = {
        name
        for name, fn in inspect.getmembers(modelgen, inspect.isfunction)
        if not name.startswith("_") and fn.__module__ == modelgen.__name__
    }
    from tests.plan.test_rules_vs_builder import CASES as RULE_CASES

    rule_cases = {getattr(make, "func", make).__name__ for make, _, _ in RULE_CASES.values()}
    # slow_conv_stack: its own test below; unfused_attention: tests/cli/test_build.py.
    covered = {make.__name__ for make, _, _ in CASES} | rule_cases
    assert generators == covered | {"slow_conv_stack", "unfused_attention"}


def test_seed_changes_only_weights(tmp_path: Path) -> None:
    a = onnx.load(str(modelgen.conv_fp32(tmp_path / "a.onnx", seed=1)))
    b = onnx.load(str(modelgen.conv_fp32(tmp_path / "b.onnx", seed=2)))
    assert [i.raw_data for i in a.graph.initializer] != [i.raw_data for i in b.graph.initializer]
    for model in (a, b):
        for init in model.graph.initializer:
            init.ClearField("raw_data")
    assert a.SerializeToString() == b.SerializeToString()


def test_external_data_model_has_the_size_asked(tmp_path: Path) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx", size=1 << 20)
    assert (tmp_path / "m.onnx.data").stat().st_size == 1 << 20
    assert path.stat().st_size < 1000
    onnx.checker.check_model(str(path))


def test_dynamic_batch_builds_with_a_profile(tmp_path: Path) -> None:
    logger = _Errors()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(modelgen.dynamic_batch_mlp(tmp_path / "m.onnx")))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 16), (4, 16), (8, 16))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None, logger.messages


def test_slow_model_takes_seconds(tmp_path: Path) -> None:
    path = modelgen.slow_conv_stack(tmp_path / "slow.onnx")
    start = time.perf_counter()
    built, log = build(path)
    elapsed = time.perf_counter() - start
    assert built, log
    # About 3.3 s on an idle core here; slower when the machine is busy, never much faster.
    assert elapsed > 1.5, f"slow model built in {elapsed:.2f} s"
