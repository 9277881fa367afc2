"""First launch for real: a weightless engine built on the GPU, bundled with its ONNX model,
refitted by `prepare`, loaded and run; then served from the cache. Needs a TensorRT-RTX GPU
(skipped with the reason elsewhere, as on the machine this was written on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix import gpu
from matrix.cli import main
from matrix.lockfile.io import read_lock
from matrix.plan.capabilities import KNOWN
from matrix.runtime import prepare, read_bundle
from tests.gpu.test_gpu_paths import BATCH, FEATURES, assert_runs_like_numpy, the_gpu
from tests.modelgen import mlp_fp32

pytestmark = pytest.mark.gpu
__all__ = ["the_gpu"]  # the fixture, shared with the other GPU tests


@pytest.fixture(scope="module")
def project(the_gpu: gpu.Gpu, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("first-launch")
    mlp_fp32(root / "models" / "mlp.onnx", batch=BATCH, features=FEATURES)
    target = the_gpu.cc.name if the_gpu.cc in KNOWN else "current"
    (root / "rtx-matrix.yaml").write_text(
        "version: 1\nmodels:\n"
        f"  - {{name: mlp, family: mlp, onnx: models/mlp.onnx, targets: [{target}], "
        "weightless: true}\n",
        encoding="utf-8",
    )
    assert main(["build", "--require-gpu", str(root / "rtx-matrix.yaml")]) == 0
    assert main(["bundle", str(root / "rtx-matrix.yaml"), "-o", str(root / "dist"),
                 "--with-onnx"]) == 0
    return root


def test_the_lock_records_the_stripped_weights_of_the_weightless_engine(project: Path) -> None:
    lock = read_lock(project / "rtx-matrix.lock")
    assert lock is not None
    (entry,) = lock.engines.values()
    assert entry.weightless and [t.name for t in entry.io] == ["x", "y"]
    assert entry.stripped_weights_bytes is not None and entry.stripped_weights_bytes > 0


def test_prepare_refits_once_and_the_engine_runs_like_numpy(
    the_gpu: gpu.Gpu, project: Path, tmp_path: Path
) -> None:
    model = project / "models" / "mlp.onnx"
    first = prepare(project / "dist", the_gpu, tmp_path / "cache").ready["mlp"]
    assert first.refitted and first.cached
    assert first.path.stat().st_size > read_bundle(project / "dist").engines[0].size
    assert_runs_like_numpy(first.path, model)

    again = prepare(project / "dist", the_gpu, tmp_path / "cache").ready["mlp"]
    assert (again.path, again.refitted) == (first.path, False)

    first.path.write_bytes(first.path.read_bytes()[:-16])  # damaged: refitted again
    third = prepare(project / "dist", the_gpu, tmp_path / "cache").ready["mlp"]
    assert third.refitted
    assert_runs_like_numpy(third.path, model)


def test_prepare_command_on_the_gpu(project: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", str(project / "dist"), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "weightless engine, refitted now and cached" in capsys.readouterr().out
