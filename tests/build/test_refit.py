"""`rtx-matrix refit` on a host without a TensorRT-RTX GPU: every refusal, for real.

The successful refit needs a GPU: it is in tests/gpu/test_gpu_paths.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from matrix import gpu
from matrix.build import refit
from matrix.build.builder import build
from matrix.build.messages import BuildRequest
from matrix.cli import main
from matrix.facts.cache import FactsCache
from matrix.lockfile.io import write_lock
from matrix.lockfile.types import Lock, LockEntry, ModelRef, PlanIdentity
from matrix.manifest.types import BuilderOptions
from matrix.runtime import refit as library_refit
from tests.modelgen import mlp_fp32
from tests.test_gpu import H100, H100_REFUSAL, RTX4090, FakeNvml


def _host_has_gpus() -> bool:
    return bool(gpu.discover().gpus)


needs_gpu_free_host = pytest.mark.skipif(
    _host_has_gpus(), reason="this host has GPUs: the refusals below assume none"
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    # refit pins the chosen GPU through the environment; undo it after each test.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


@pytest.fixture
def library_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("tensorrt_rtx was used although the GPU check should have failed")

    monkeypatch.setattr(library_refit, "refit_blob", refuse)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return mlp_fp32(tmp_path / "mlp.onnx")


@pytest.fixture
def fake_engine(tmp_path: Path) -> Path:
    path = tmp_path / "mlp+weightless.engine"
    path.write_bytes(b"not really an engine, but refused before anyone reads it")
    return path


def fake_gpus(monkeypatch: pytest.MonkeyPatch, *devices: tuple[str, tuple[int, int]]) -> None:
    answer = gpu.discover(FakeNvml(devices=devices))
    monkeypatch.setattr(gpu, "discover", lambda nvml=None: answer)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str]]:
    code = main(["refit", *map(str, argv)])
    return code, capsys.readouterr().err.splitlines()


@needs_gpu_free_host
def test_refit_without_a_gpu_fails_at_once_with_exit_3(
    capsys: pytest.CaptureFixture[str], fake_engine: Path, model: Path, library_not_called: None
) -> None:
    reason = gpu.discover().reason
    code, err = run(capsys, fake_engine, "--onnx", model)
    assert code == 3
    assert err == [f"error: refit needs a GPU that TensorRT-RTX supports: {reason}"]
    assert not refit.default_output(fake_engine).exists()


def test_refit_on_an_h100_is_refused(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: Path,
    model: Path,
    library_not_called: None,
) -> None:
    fake_gpus(monkeypatch, H100)
    code, err = run(capsys, fake_engine, "--onnx", model)
    assert code == 3
    assert err == [f"error: refit needs a GPU that TensorRT-RTX supports: {H100_REFUSAL}"]


def test_device_that_is_not_there(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: Path,
    model: Path,
    library_not_called: None,
) -> None:
    fake_gpus(monkeypatch, RTX4090)
    code, err = run(capsys, fake_engine, "--onnx", model, "--device", "1")
    assert (code, err) == (
        3,
        [
            "error: refit needs a GPU that TensorRT-RTX supports: --device 1: no such GPU; "
            "found GPU 0 (NVIDIA GeForce RTX 4090, CC 8.9)"
        ],
    )


def test_missing_engine_and_model_are_both_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, library_not_called: None
) -> None:
    code, err = run(capsys, tmp_path / "nope.engine", "--onnx", tmp_path / "nope.onnx")
    assert code == 2
    assert err == [
        f"error: {tmp_path / 'nope.engine'}: no such engine",
        f"error: {tmp_path / 'nope.onnx'}: no such ONNX model",
    ]


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        ((), "error: refit ENGINE needs --onnx MODEL (or use --lock LOCKFILE CELL_ID)"),
        (
            ("--onnx", "m.onnx", "--lock", "m.lock"),
            "error: --onnx and --lock do not go together: the lock names the model",
        ),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], fake_engine: Path, extra: tuple[str, ...], line: str
) -> None:
    assert run(capsys, fake_engine, *extra) == (2, [line])


def test_output_problems(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fake_engine: Path, model: Path
) -> None:
    code, err = run(capsys, fake_engine, "--onnx", model, "-o", fake_engine)
    assert (code, err) == (
        2,
        [f"error: {fake_engine}: the output would overwrite the weightless engine"],
    )
    missing = tmp_path / "no" / "full.engine"
    code, err = run(capsys, fake_engine, "--onnx", model, "-o", missing)
    assert (code, err) == (2, [f"error: {missing}: no such folder: {missing.parent}"])


def test_empty_engine_and_folder_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.engine"
    empty.touch()
    code, err = run(capsys, empty, "--onnx", tmp_path)
    assert code == 2
    assert err == [
        f"error: {empty}: the engine is empty",
        f"error: {tmp_path}: the ONNX model is not a file",
    ]


def test_no_arguments_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["refit"])
    assert raised.value.code == 2


def test_default_output_sits_beside_the_engine() -> None:
    engine = Path("engines/det@sm89+weightless.engine")
    assert refit.default_output(engine) == Path("engines/det@sm89+weightless.full.engine")


# --- refit --lock -----------------------------------------------------------------------


def entry(root: Path, cell: str, model: Path, weightless: bool = True) -> LockEntry:
    engine = root / "engines" / f"{cell}.engine"
    engine.parent.mkdir(exist_ok=True)
    engine.write_bytes(b"engine bytes of " + cell.encode())
    facts = FactsCache().get(model)
    return LockEntry(
        path=f"engines/{cell}.engine",
        sha256=hashlib.sha256(engine.read_bytes()).hexdigest(),
        size=engine.stat().st_size,
        model=ModelRef("mlp", model.name, facts.digest, facts.graph_digest, facts.weights_digest),
        targets=("sm89",),
        resolved_targets=("sm89",),
        runs_on=("sm89",),
        weightless=weightless,
        options=MappingProxyType({}),
        fingerprint="f" * 64,
        build_seconds=0.5,
        built_at="2026-01-01T00:00:00Z",
        header_mask=8,
        gpu="NVIDIA GeForce RTX 4090",
    )


@pytest.fixture
def lock(tmp_path: Path, model: Path) -> Path:
    entries = {
        "mlp@sm89+weightless": entry(tmp_path, "mlp@sm89+weightless", model),
        "mlp@sm89": entry(tmp_path, "mlp@sm89", model, weightless=False),
    }
    cells = tuple(sorted(entries))
    path = tmp_path / "m.lock"
    write_lock(
        path,
        Lock("0.1.0", "1.7.1.116", "m.yaml", PlanIdentity("e" * 64, cells),
             MappingProxyType(entries)),
    )
    return path


@needs_gpu_free_host
def test_lock_entry_passes_its_checks_then_needs_a_gpu(
    capsys: pytest.CaptureFixture[str], lock: Path, library_not_called: None
) -> None:
    code, err = run(capsys, "--lock", lock, "mlp@sm89+weightless")
    assert code == 3
    assert err[0].startswith("error: refit needs a GPU that TensorRT-RTX supports: ")


def test_lock_refuses_a_full_engine(capsys: pytest.CaptureFixture[str], lock: Path) -> None:
    assert run(capsys, "--lock", lock, "mlp@sm89") == (
        2,
        [
            f"error: {lock}: mlp@sm89: not a weightless engine: "
            "engines/mlp@sm89.engine holds its weights"
        ],
    )


def test_lock_unknown_cell_suggests_one(capsys: pytest.CaptureFixture[str], lock: Path) -> None:
    assert run(capsys, "--lock", lock, "mlp@sm89+weigthless") == (
        2,
        [
            f"error: {lock}: no engine 'mlp@sm89+weigthless' in the lock, "
            "did you mean 'mlp@sm89+weightless'?"
        ],
    )


def test_lock_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "--lock", tmp_path / "x.lock", "c") == (
        2,
        [f"error: {tmp_path / 'x.lock'}: no such lockfile"],
    )


def test_lock_refuses_an_engine_edited_since_the_build(
    capsys: pytest.CaptureFixture[str], lock: Path
) -> None:
    engine = lock.parent / "engines" / "mlp@sm89+weightless.engine"
    engine.write_bytes(engine.read_bytes()[:-1] + b"?")
    assert run(capsys, "--lock", lock, "mlp@sm89+weightless") == (
        2,
        [
            f"error: {lock}: mlp@sm89+weightless: {engine} is not the engine the lock "
            "recorded; rebuild it"
        ],
    )


def test_lock_refuses_a_model_whose_graph_changed(
    capsys: pytest.CaptureFixture[str], lock: Path, model: Path, library_not_called: None
) -> None:
    mlp_fp32(model, features=12)  # other input width: another graph
    assert run(capsys, "--lock", lock, "mlp@sm89+weightless") == (
        2,
        [f"error: {model}: the model's graph changed since the engine was built; rebuild it"],
    )


@needs_gpu_free_host
def test_lock_accepts_a_model_whose_weights_alone_changed(
    capsys: pytest.CaptureFixture[str], lock: Path, model: Path, library_not_called: None
) -> None:
    mlp_fp32(model, seed=7)  # same graph, new weights: what refit is for
    code, err = run(capsys, "--lock", lock, "mlp@sm89+weightless")
    assert code == 3  # past the graph check, stopped only by the missing GPU
    assert err[0].startswith("error: refit needs a GPU")


# --- the library path, reached with a GPU NVML claims but CUDA cannot use -----------------


@pytest.fixture(scope="module")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    onnx = mlp_fp32(folder / "mlp.onnx", batch=2)
    engine = folder / "mlp.engine"
    result = build(
        BuildRequest(
            cell_id="mlp@default",
            onnx=str(onnx),
            ccs=(),
            use_gpu=False,
            weightless=False,
            options=BuilderOptions(),
            profiles=(),
            engine_path=str(engine),
            log_path=str(folder / "mlp.log"),
        )
    )
    assert result.ok, result.error
    return engine


@needs_gpu_free_host
def test_library_failure_is_one_line_and_leaves_no_file(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    real_engine: Path,
) -> None:
    fake_gpus(monkeypatch, RTX4090)
    onnx = real_engine.with_name("mlp.onnx")
    before = set(real_engine.parent.iterdir())
    code, err = run(capsys, real_engine, "--onnx", onnx)
    assert code == 1
    assert len(err) == 1
    assert err[0].startswith(
        f"error: {real_engine}: TensorRT-RTX could not load the engine: "
        "IRuntime::deserializeCudaEngine: Error Code 1: Cuda Runtime"
    )
    assert "CUDA driver version is insufficient" in err[0]
    assert set(real_engine.parent.iterdir()) == before  # no output, no temporary file
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-00000000-fake"


@needs_gpu_free_host
def test_refused_refit_never_imports_the_library(fake_engine: Path, model: Path) -> None:
    script = (
        "import sys\n"
        "from matrix.cli import main\n"
        f"code = main(['refit', {str(fake_engine)!r}, '--onnx', {str(model)!r}])\n"
        "print(code, 'tensorrt_rtx' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.stdout.split() == ["3", "False"], done.stderr
    assert done.stderr.startswith("error: refit needs a GPU that TensorRT-RTX supports: ")
