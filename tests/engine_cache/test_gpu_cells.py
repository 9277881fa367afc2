"""GPU cells and the cache, on this CPU-only host with NVML's answers injected: a machine
fetches `current` engines a GPU of the same name built, and only those."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from matrix import __version__, gpu
from matrix.engine_cache.record import record_of
from matrix.engine_cache.store import EngineStore
from matrix.lockfile.io import read_lock
from matrix.lockfile.survey import survey
from matrix.manifest.types import CacheSpec
from matrix.versions import installed_tensorrt_rtx
from tests import modelgen
from tests.engine_cache.conftest import Project
from tests.test_gpu import RTX4090, FakeNvml

pytestmark = pytest.mark.slow

RTX4080 = ("NVIDIA GeForce RTX 4080", (8, 9))
DISCOVER = gpu.discover


def fake_gpus(monkeypatch: pytest.MonkeyPatch, *devices: tuple[str, tuple[int, int]]) -> None:
    answer = DISCOVER(FakeNvml(devices=devices))
    monkeypatch.setattr(gpu, "discover", lambda nvml=None: answer)


@pytest.fixture
def gpu_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Project:
    """A `current` cell whose engine an RTX 4090 pushed to the cache. The engine's bytes
    are a real sm89 build made here (a `current` build on a CC 8.9 GPU targets sm89)."""
    cache = tmp_path / "cache"
    project = Project(tmp_path / "p")
    modelgen.conv_fp32(project.root / "models" / "m.onnx")
    project.manifest.write_text(
        f"version: 1\ncache: {{url: '{cache}'}}\nmodels:\n"
        "  - {name: m, onnx: models/m.onnx, targets: [sm89, current]}\n"
    )
    assert project.run("build", "m@sm89", "--no-cache") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    built = lock.engines["m@sm89"]
    fake_gpus(monkeypatch, RTX4090)
    key = next(s for s in survey(project.manifest).freshness.cells if s.cell.id == "m@current")
    assert key.fingerprint and key.fingerprint != built.fingerprint
    entry = replace(built, fingerprint=key.fingerprint, targets=("current",),
                    gpu=RTX4090[0], path="elsewhere/m@current.engine")
    store = EngineStore(CacheSpec(str(cache)))
    store.put_engine(str(project.engine("m@sm89")), entry.sha256, entry.size)
    store.put_record(record_of(entry, installed_tensorrt_rtx(), "built on a GPU\n", __version__))
    capsys.readouterr()
    return project


def test_a_current_engine_comes_from_a_gpu_of_the_same_name(
    gpu_project: Project, capsys: Any
) -> None:
    assert gpu_project.run("cache", "pull") == 0
    out = capsys.readouterr().out
    assert "fetched m@current from the cache" in out
    lock = read_lock(gpu_project.lock)
    assert lock is not None
    entry = lock.engines["m@current"]
    assert (entry.gpu, entry.targets, entry.resolved_targets) == (RTX4090[0], ("current",),
                                                                  ("sm89",))
    assert entry.path == "engines/m/m@current.engine"
    assert gpu_project.engine("m@current").with_suffix(".log").read_text().startswith(
        "built on a GPU\n")
    assert gpu_project.run("status", "--check") == 0  # same GPU name: up to date


def test_another_gpu_of_the_same_cc_does_not_take_it(
    gpu_project: Project, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpus(monkeypatch, RTX4080)
    assert gpu_project.run("cache", "status") == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:2] == ["m@current", "missing"]
    assert line.endswith(f"built on the {RTX4090[0]}, this is the {RTX4080[0]}")
