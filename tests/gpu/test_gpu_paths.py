"""The paths that need a TensorRT-RTX GPU: `current` and weightless builds, refit, inference.

Skipped by tests/conftest.py (with the reason) unless `matrix.gpu.discover()` finds a GPU
that TensorRT-RTX supports. Running engines also needs CUDA buffers: `cuda-python`
(`cuda.bindings`, what the TensorRT-RTX samples use); without it those tests skip. On a
machine with several GPUs, run them with CUDA_VISIBLE_DEVICES naming the RTX one: this
process may have started CUDA before the fixture below pins the device.
See docs/gpu.md for what could not be run where this was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from matrix import gpu
from matrix.build.builder import build
from matrix.build.messages import BuildRequest
from matrix.build.refit import default_output, refit_engine
from matrix.cli import main
from matrix.manifest.types import BuilderOptions
from matrix.plan.capabilities import KNOWN, SM75
from tests.modelgen import mlp_fp32

pytestmark = pytest.mark.gpu

BATCH = 2
FEATURES = 16


@pytest.fixture(scope="module")
def the_gpu() -> Iterator[gpu.Gpu]:
    chosen = gpu.discover().pick()
    if chosen.cc == SM75:
        pytest.skip("the test model has float32 GEMMs, which TensorRT-RTX refuses on Turing")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in gpu.cuda_env(chosen).items():
            patch.setenv(name, value)
        yield chosen


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu")


@pytest.fixture(scope="module")
def model(folder: Path) -> Path:
    return mlp_fp32(folder / "mlp.onnx", batch=BATCH, features=FEATURES)


def target_of(the_gpu: gpu.Gpu) -> dict[str, Any]:
    """A single-CC build for the GPU: its CC when the library names it, else CURRENT."""
    if the_gpu.cc in KNOWN:
        return {"ccs": (the_gpu.cc.name,), "use_gpu": False}
    return {"ccs": (), "use_gpu": True}


def build_engine(model: Path, engine: Path, **how: Any) -> Path:
    request = BuildRequest(
        cell_id=engine.stem,
        onnx=str(model),
        options=BuilderOptions(),
        profiles=(),
        engine_path=str(engine),
        log_path=str(engine.with_suffix(".log")),
        **{"ccs": (), "use_gpu": False, "weightless": False, **how},
    )
    result = build(request)
    assert result.ok, result.error
    assert engine.is_file()
    return engine


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    """numpy's answer for `tests.modelgen.mlp_fp32`: relu(x @ w1 + b1) @ w2."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0.0)
    out: np.ndarray = hidden @ weights["w2"]
    return out


def sample_input() -> np.ndarray:
    return np.random.default_rng(42).standard_normal((BATCH, FEATURES)).astype(np.float32)


def assert_runs_like_numpy(engine: Path, model: Path) -> None:
    x = sample_input()
    # float32 GEMMs may run as TF32 on Ampere and later: allow its 10-bit mantissa.
    np.testing.assert_allclose(run_engine(engine, x), reference(model, x), rtol=1e-2, atol=1e-2)


def run_engine(engine_path: Path, x: np.ndarray) -> np.ndarray:
    """Deserialize, then run input `x` -> output `y` as the TensorRT-RTX helloWorld sample does."""
    cudart = pytest.importorskip(
        "cuda.bindings.runtime",
        reason="running engines needs cuda-python (pip install cuda-python)",
    )
    import tensorrt_rtx as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    assert engine is not None, f"{engine_path} did not deserialize"
    context = engine.create_execution_context()
    assert context is not None
    y = np.empty(tuple(engine.get_tensor_shape("y")), dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    stream = _cuda(cudart, cudart.cudaStreamCreate())
    x_device = _cuda(cudart, cudart.cudaMalloc(x.nbytes))
    y_device = _cuda(cudart, cudart.cudaMalloc(y.nbytes))
    try:
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _cuda(cudart, cudart.cudaMemcpy(x_device, x.ctypes.data, x.nbytes, to_device))
        context.set_tensor_address("x", int(x_device))
        context.set_tensor_address("y", int(y_device))
        assert context.execute_async_v3(stream_handle=int(stream))
        _cuda(cudart, cudart.cudaStreamSynchronize(stream))
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(cudart, cudart.cudaMemcpy(y.ctypes.data, y_device, y.nbytes, to_host))
    finally:
        cudart.cudaFree(x_device)
        cudart.cudaFree(y_device)
        cudart.cudaStreamDestroy(stream)
    return y


def _cuda(cudart: Any, call: tuple[Any, ...]) -> Any:
    error, *result = call
    if error != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error: {error}")
    return result[0] if result else None


def test_current_build_runs_and_matches_numpy(the_gpu: gpu.Gpu, model: Path, folder: Path) -> None:
    engine = build_engine(model, folder / "mlp@current.engine", use_gpu=True)
    assert_runs_like_numpy(engine, model)


def test_weightless_build_refits_into_a_full_engine_that_runs(
    the_gpu: gpu.Gpu, model: Path, folder: Path
) -> None:
    target = target_of(the_gpu)
    weightless = build_engine(model, folder / "mlp+weightless.engine", weightless=True, **target)
    full_build = build_engine(model, folder / "mlp.engine", **target)
    assert weightless.stat().st_size < full_build.stat().st_size  # the weights were left out

    result = refit_engine(weightless, model, folder / "mlp.refitted.engine")
    assert result.output.stat().st_size == result.size
    assert result.size > weightless.stat().st_size  # serialized without EXCLUDE_WEIGHTS
    assert_runs_like_numpy(result.output, model)


def test_refit_takes_the_weights_from_the_onnx_given(
    the_gpu: gpu.Gpu, model: Path, folder: Path
) -> None:
    weightless = build_engine(
        model, folder / "w+weightless.engine", weightless=True, **target_of(the_gpu)
    )
    retrained = mlp_fp32(folder / "retrained.onnx", seed=7, batch=BATCH, features=FEATURES)
    result = refit_engine(weightless, retrained, folder / "retrained.engine")
    assert_runs_like_numpy(result.output, retrained)
    x = sample_input()
    assert not np.allclose(reference(retrained, x), reference(model, x), atol=1e-2)


def test_refit_command_writes_the_default_output(
    the_gpu: gpu.Gpu, model: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weightless = build_engine(
        model, folder / "cli+weightless.engine", weightless=True, **target_of(the_gpu)
    )
    assert main(["refit", str(weightless), "--onnx", str(model)]) == 0
    output = default_output(weightless)
    assert capsys.readouterr().out.startswith(f"refitted {weightless} with {model} on GPU ")
    assert_runs_like_numpy(output, model)
