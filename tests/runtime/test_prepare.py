"""`prepare`'s decisions: which GPU, when to refit, what the cache holds and when to trust it.

The GPUs are NVML answers the tests choose (`tests.test_gpu.FakeNvml`). Refitting needs a
GPU, so every test but the last two uses a stand-in refitter (`tests.runtime.stand_in`);
those two run the real library on this CPU-only host, where it refuses with its own error.
The real refit and load run in tests/gpu/test_runtime_gpu.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from matrix import gpu
from matrix.atomic import sha256_file
from matrix.cli import main
from matrix.errors import GpuError, InputError, OutputBusy
from matrix.facts.cache import FactsCache
from matrix.file_lock import file_lock
from matrix.plan.capabilities import CC
from matrix.runtime import BundleDamaged, prepare
from matrix.runtime.bundle import (
    Bundle,
    BundleEngine,
    BundleFile,
    Family,
    RefitNeeds,
    bundle_to_json,
    read_bundle,
)
from matrix.runtime.prepare import cache_key
from matrix.runtime.refit import RefitFailed
from matrix.versions import VERSION_OVERRIDE, installed_tensorrt_rtx
from tests import modelgen
from tests.factories import build_request
from tests.runtime.stand_in import StandInRefitter, stand_in_full_engine
from tests.test_gpu import H100, H100_REFUSAL, RTX3090, RTX4090, FakeNvml

REPO = Path(__file__).resolve().parents[2]
RTX3090_GPU = gpu.Gpu(0, "NVIDIA GeForce RTX 3090", CC(8, 6), 24 << 30, "GPU-3090", "580.95.05")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def fake_gpus(monkeypatch: pytest.MonkeyPatch, *devices: tuple[str, tuple[int, int]]) -> None:
    answer = gpu.discover(FakeNvml(devices=devices))
    monkeypatch.setattr(gpu, "discover", lambda nvml=None: answer)


def model_files(folder: Path, seed: int = 0) -> Path:
    return modelgen.external_data_model(folder / "ocr.onnx", size=2048, seed=seed)


def write_bundle(
    root: Path,
    model: Path,
    *,
    weightless: tuple[tuple[str, ...], ...] = (("sm86",),),
    full: tuple[tuple[str, ...], ...] = (),
    with_onnx: bool = True,
    engine_bytes: bytes | None = None,
) -> Path:
    """A bundle of model `ocr`: weightless engines built for each CC tuple in `weightless`,
    full ones for `full` (() is the library default). Engine bytes are stand-ins."""
    facts = FactsCache().get(model)
    files = []
    for name in (model.name, *facts.external_files):
        source = model.parent / name
        inside = f"onnx/ocr/{name}" if with_onnx else None
        if inside:
            (root / inside).parent.mkdir(parents=True, exist_ok=True)
            (root / inside).write_bytes(source.read_bytes())
        files.append(BundleFile(name, source.stat().st_size, sha256_file(source), inside))
    needs = RefitNeeds(tuple(files), facts.digest, facts.graph_digest, facts.weights_digest)
    engines = []
    for built_for, is_weightless in [*((w, True) for w in weightless), *((f, False) for f in full)]:
        target = "+".join(built_for) or "default"
        cell = f"ocr@{target}" + ("+weightless" if is_weightless else "")
        path = root / "engines" / f"{cell}.engine"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(engine_bytes or f"stand-in engine {cell}".encode() * 40)
        runs_on = built_for or ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")
        engines.append(BundleEngine(
            cell=cell, model="ocr", family="ocr", path=f"engines/{cell}.engine",
            sha256=sha256_file(path), size=path.stat().st_size, tensorrt_rtx="1.7.1.116",
            targets=built_for, built_for=built_for, runs_on=runs_on, weightless=is_weightless,
            dtypes=("fp16",), refit=needs if is_weightless else None,
        ))
    bundle = Bundle(root, "0.1.0", "1.7.1.116", (Family("ocr", ("ocr",)),), tuple(engines))
    (root / "bundle.json").write_text(bundle_to_json(bundle), encoding="utf-8")
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return model_files(tmp_path / "src")


@pytest.fixture
def bundled(tmp_path: Path, model: Path) -> Path:
    return write_bundle(tmp_path / "bundle", model)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ------------------------------------------------------------------------- the refit cache


def test_stand_in_refit_once_then_every_launch_finds_it_in_the_cache(
    bundled: Path, cache: Path
) -> None:
    refitter = StandInRefitter()
    first = prepare(bundled, RTX3090_GPU, cache, refitter=refitter)
    ready = first.ready["ocr"]
    assert (ready.refitted, ready.cached) == (True, True)
    assert ready.engine.cell == "ocr@sm86+weightless"
    key = cache_key(ready.engine, RTX3090_GPU)
    assert ready.path == cache / f"ocr@sm86+weightless.{key}.engine"
    weightless = bundled / "engines" / "ocr@sm86+weightless.engine"
    onnx = bundled / "onnx" / "ocr" / "ocr.onnx"
    assert refitter.calls == [(weightless, onnx)]
    assert ready.path.read_bytes() == stand_in_full_engine(weightless, onnx)
    record = json.loads(ready.path.with_suffix(".json").read_text())
    assert record | {"refitted_at": "-"} == {
        "cell": "ocr@sm86+weightless",
        "key": key,
        "sha256": sha256_file(ready.path),
        "size": ready.path.stat().st_size,
        "weightless_sha256": ready.engine.sha256,
        "gpu": "GPU-3090",
        "driver": "580.95.05",
        "tensorrt_rtx": installed_tensorrt_rtx(),
        "weights_digest": ready.engine.refit.weights_digest,  # type: ignore[union-attr]
        "refitted_at": "-",
    }

    again = prepare(bundled, RTX3090_GPU, cache, refitter=refitter)
    assert (again.path("ocr"), again.ready["ocr"].refitted) == (ready.path, False)
    assert len(refitter.calls) == 1  # no second refit


def test_the_default_cache_is_the_per_user_one(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "mine"))
    ready = prepare(bundled, RTX3090_GPU, refitter=StandInRefitter()).ready["ocr"]
    assert ready.path.parent == tmp_path / "mine" / "refitted"


@pytest.mark.parametrize(
    "change",
    [
        "another GPU of the same model",
        "a driver update",
        "a TensorRT-RTX update",
        "a GPU NVML gives no UUID for",
        "new weights in the bundle",
    ],
)
def test_anything_that_makes_a_refitted_engine_wrong_refits_again(
    bundled: Path, cache: Path, model: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    refitter = StandInRefitter()
    before = prepare(bundled, RTX3090_GPU, cache, refitter=refitter).path("ocr")
    other = RTX3090_GPU
    if change == "another GPU of the same model":
        other = dataclasses.replace(RTX3090_GPU, uuid="GPU-another-3090")
    elif change == "a driver update":
        other = dataclasses.replace(RTX3090_GPU, driver="590.10")
    elif change == "a TensorRT-RTX update":
        monkeypatch.setenv(VERSION_OVERRIDE, "1.7.2.1")
        installed_tensorrt_rtx.cache_clear()
    elif change == "a GPU NVML gives no UUID for":
        other = dataclasses.replace(RTX3090_GPU, uuid=None)
    else:
        write_bundle(bundled, model_files(model.parent.parent / "retrained", seed=3))
    try:
        after = prepare(bundled, other, cache, refitter=refitter)
    finally:
        installed_tensorrt_rtx.cache_clear()
    assert after.ready["ocr"].refitted
    assert after.path("ocr") != before and before.is_file()  # the other entry stays
    assert len(refitter.calls) == 2


def test_the_key_of_a_gpu_without_uuid_is_its_cc(bundled: Path, cache: Path) -> None:
    no_uuid = dataclasses.replace(RTX3090_GPU, uuid=None)
    ready = prepare(bundled, no_uuid, cache, refitter=StandInRefitter()).ready["ocr"]
    assert json.loads(ready.path.with_suffix(".json").read_text())["gpu"] == "sm86"


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "no record", "bad record"])
def test_a_damaged_cached_engine_is_refitted_again(
    bundled: Path, cache: Path, damage: str
) -> None:
    refitter = StandInRefitter()
    path = prepare(bundled, RTX3090_GPU, cache, refitter=refitter).path("ocr")
    good = path.read_bytes()
    if damage == "flipped byte":
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    elif damage == "truncated":
        path.write_bytes(good[:100])
    elif damage == "no record":
        path.with_suffix(".json").unlink()
    else:
        path.with_suffix(".json").write_text("{not json")
    again = prepare(bundled, RTX3090_GPU, cache, refitter=refitter).ready["ocr"]
    assert (again.path, again.refitted) == (path, True)
    assert path.read_bytes() == good
    assert len(refitter.calls) == 2


def test_a_refitted_engine_tensorrt_rtx_would_not_load_is_not_cached(
    bundled: Path, cache: Path
) -> None:
    refitter = StandInRefitter(invalid_reason="unsupported cc")
    with pytest.raises(RefitFailed) as failed:
        prepare(bundled, RTX3090_GPU, cache, refitter=refitter)
    assert str(failed.value) == (
        "ocr@sm86+weightless: the refitted engine does not load on "
        "GPU 0 (NVIDIA GeForce RTX 3090, CC 8.6): unsupported cc"
    )
    assert failed.value.exit_code == 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock"]  # no engine, no record


def test_a_full_engine_is_loaded_from_the_bundle_and_nothing_is_cached(
    tmp_path: Path, model: Path, cache: Path
) -> None:
    root = write_bundle(tmp_path / "b", model, weightless=((),), full=(("sm86",),))
    refitter = StandInRefitter()
    ready = prepare(root, RTX3090_GPU, cache, refitter=refitter).ready["ocr"]
    assert (ready.engine.cell, ready.path) == ("ocr@sm86", root / "engines" / "ocr@sm86.engine")
    assert (ready.refitted, ready.cached, refitter.calls) == (False, False, [])
    assert not cache.exists()


def test_a_family_without_an_engine_for_the_gpu_is_reported_not_raised(
    tmp_path: Path, model: Path, cache: Path
) -> None:
    root = write_bundle(tmp_path / "b", model, weightless=(("sm89",),))
    prepared = prepare(root, RTX3090_GPU, cache, refitter=StandInRefitter())
    assert dict(prepared.ready) == {}
    assert dict(prepared.missing) == {"ocr": "no engine runs on CC 8.6 (its engines run on sm89)"}


# ----------------------------------------------------------------- the bundle and the model


def test_a_damaged_weightless_engine_is_never_refitted(bundled: Path, cache: Path) -> None:
    engine = bundled / "engines" / "ocr@sm86+weightless.engine"
    engine.write_bytes(engine.read_bytes()[::-1])
    refitter = StandInRefitter()
    with pytest.raises(BundleDamaged) as damaged:
        prepare(bundled, RTX3090_GPU, cache, refitter=refitter)
    listed = read_bundle(bundled).engines[0].sha256
    assert str(damaged.value) == (
        f"{engine}: sha256 {sha256_file(engine)} where bundle.json lists {listed}: "
        "the file was modified"
    )
    assert damaged.value.exit_code == 1 and refitter.calls == []


def test_a_damaged_onnx_file_in_the_bundle_is_refused(bundled: Path, cache: Path) -> None:
    data = bundled / "onnx" / "ocr" / "ocr.onnx.data"
    data.unlink()
    with pytest.raises(BundleDamaged, match=r"ocr\.onnx\.data: missing \(bundle.json lists it\)$"):
        prepare(bundled, RTX3090_GPU, cache, refitter=StandInRefitter())


def test_a_model_the_bundle_does_not_carry_must_be_supplied(
    tmp_path: Path, model: Path, cache: Path
) -> None:
    root = write_bundle(tmp_path / "b", model, with_onnx=False)
    with pytest.raises(InputError) as missing:
        prepare(root, RTX3090_GPU, cache, refitter=StandInRefitter())
    assert str(missing.value) == (
        "ocr@sm86+weightless is weightless and its bundle does not carry ocr.onnx: pass "
        "onnx={'ocr': PATH} (--onnx ocr=PATH), or bundle with --with-onnx"
    )
    refitter = StandInRefitter()
    ready = prepare(root, RTX3090_GPU, cache, onnx={"ocr": model}, refitter=refitter)
    assert ready.ready["ocr"].refitted and refitter.calls[0][1] == model


def test_a_supplied_model_must_be_the_one_the_bundle_names(
    tmp_path: Path, model: Path, cache: Path
) -> None:
    root = write_bundle(tmp_path / "b", model, with_onnx=False)
    other = model_files(tmp_path / "other", seed=4)  # same graph, other weights
    lonely = tmp_path / "lonely" / "ocr.onnx"
    lonely.parent.mkdir()
    lonely.write_bytes(model.read_bytes())  # its external data is not beside it
    refitter = StandInRefitter()
    with pytest.raises(InputError) as wrong:
        prepare(root, RTX3090_GPU, cache, onnx={"ocr": other}, refitter=refitter)
    assert [str(p) for p in wrong.value.problems] == [
        f"{other.parent / 'ocr.onnx.data'}: not the ocr model the bundle was built for "
        "(it has other bytes)"
    ]
    with pytest.raises(InputError) as alone:
        prepare(root, RTX3090_GPU, cache, onnx={"ocr": lonely}, refitter=refitter)
    assert [str(p) for p in alone.value.problems] == [
        f"{lonely.parent / 'ocr.onnx.data'}: missing: the ocr model needs it"
    ]
    assert refitter.calls == []


# -------------------------------------------------------------------------------- the GPU


def test_the_first_supported_gpu_is_used_and_named_in_the_key(
    bundled: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpus(monkeypatch, H100, RTX3090)
    ready = prepare(bundled, cache_dir=cache, refitter=StandInRefitter()).ready["ocr"]
    record = json.loads(ready.path.with_suffix(".json").read_text())
    assert (record["gpu"], record["driver"]) == ("GPU-00000001-fake", "580.95.05")


@pytest.mark.parametrize(
    ("devices", "index", "line"),
    [
        ((H100,), None, H100_REFUSAL),
        ((H100, RTX3090), 0, H100_REFUSAL),
        ((RTX3090,), 5, "gpu 5: no such GPU; found GPU 0 (NVIDIA GeForce RTX 3090, CC 8.6)"),
        ((), None, "no GPU found"),
    ],
)
def test_gpus_tensorrt_rtx_cannot_use_are_refused_with_builds_line(
    bundled: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
    devices: tuple[tuple[str, tuple[int, int]], ...], index: int | None, line: str,
) -> None:
    fake_gpus(monkeypatch, *devices)
    refitter = StandInRefitter()
    with pytest.raises(GpuError) as refused:
        prepare(bundled, index, cache, refitter=refitter)
    assert (str(refused.value), refused.value.exit_code) == (line, 3)
    assert refitter.calls == [] and not cache.exists()


def test_an_ada_gpu_gets_no_ampere_engine(
    tmp_path: Path, model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_bundle(tmp_path / "b", model, weightless=(("sm86",), ()))
    fake_gpus(monkeypatch, RTX4090)
    ready = prepare(root, None, cache, refitter=StandInRefitter()).ready["ocr"]
    assert ready.engine.cell == "ocr@default+weightless"


# ----------------------------------------------------------------------------- concurrency


def test_another_refit_of_the_same_engine_is_waited_for_up_to_a_limit(
    bundled: Path, cache: Path
) -> None:
    ready = prepare(bundled, RTX3090_GPU, cache, refitter=StandInRefitter())
    path = ready.path("ocr")
    path.with_suffix(".json").unlink()  # needs a refit again
    refitter = StandInRefitter()
    said: list[str] = []
    with file_lock(path.with_suffix(".lock")), pytest.raises(OutputBusy) as busy:
        prepare(bundled, RTX3090_GPU, cache, refitter=refitter, wait=0.2, on_progress=said.append)
    assert said == ["waiting for another process refitting ocr@sm86+weightless"]
    assert str(busy.value) == (
        f"{path.with_suffix('.lock')}: another process has been refitting ocr@sm86+weightless "
        "for over 0.2 s"
    )
    assert busy.value.exit_code == 3 and refitter.calls == []


LAUNCH = """
import json, sys, time
from pathlib import Path
from matrix.gpu import Gpu
from matrix.plan.capabilities import CC
from matrix.runtime import prepare
from tests.runtime.stand_in import StandInRefitter

bundle, cache, go, log = sys.argv[1:]
Path(go + "." + str(__import__("os").getpid())).touch()
while not Path(go).exists():
    time.sleep(0.005)
gpu = Gpu(0, "NVIDIA GeForce RTX 3090", CC(8, 6), 24 << 30, "GPU-3090", "580.95.05")
ready = prepare(bundle, gpu, cache, refitter=StandInRefitter(delay=0.5, log=Path(log)))
print(json.dumps({f: [str(r.path), r.refitted] for f, r in ready.ready.items()}))
"""


def test_two_first_launches_at_once_refit_once_and_both_load_it(
    bundled: Path, cache: Path, tmp_path: Path
) -> None:
    go, log = tmp_path / "go", tmp_path / "refits.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launches = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(bundled), str(cache), str(go), str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both are past their imports: they call prepare together
    results = []
    for launch in launches:
        out, err = launch.communicate(timeout=60)
        assert launch.returncode == 0, err
        results.append(json.loads(out)["ocr"])
    assert sorted(refitted for _, refitted in results) == [False, True]
    assert results[0][0] == results[1][0]
    assert len(log.read_text().splitlines()) == 1  # one refit between them
    weightless = bundled / "engines" / "ocr@sm86+weightless.engine"
    onnx = bundled / "onnx" / "ocr" / "ocr.onnx"
    assert Path(results[0][0]).read_bytes() == stand_in_full_engine(weightless, onnx)
    assert sorted(p.name.split(".", 2)[-1] for p in cache.iterdir()) == [
        "engine", "json", "lock",
    ]


# ------------------------------------------------------------- the real library, no GPU


@pytest.fixture
def real_engine_bundle(tmp_path: Path, model: Path) -> Path:
    """A bundle whose "weightless" engine is a real engine built here by TensorRT-RTX."""
    from matrix.build.builder import build

    source = modelgen.matmul_fp16(tmp_path / "m.onnx")
    result = build(build_request(tmp_path, source, ccs=("sm86",)))
    assert result.ok, result.error
    engine = (tmp_path / "engines" / "cell.engine").read_bytes()
    return write_bundle(tmp_path / "b", model, engine_bytes=engine)


def test_the_real_refit_on_a_host_without_cuda_fails_with_the_librarys_error(
    real_engine_bundle: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_gpus(monkeypatch, RTX3090)  # NVML says a 3090; CUDA finds no driver
    code = main(["prepare", str(real_engine_bundle), "--cache-dir", str(cache)])
    said, err = capsys.readouterr().err.splitlines()
    engine = real_engine_bundle / "engines" / "ocr@sm86+weightless.engine"
    onnx = real_engine_bundle / "onnx" / "ocr" / "ocr.onnx"
    assert code == 1
    assert said == (f"refitting ocr@sm86+weightless from {onnx} on GPU 0 (NVIDIA GeForce RTX "
                    "3090, CC 8.6) (once per GPU, driver and TensorRT-RTX version)")
    assert err.startswith(f"error: {engine}: TensorRT-RTX could not load the engine: ")
    assert "CUDA driver version is insufficient" in err
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-00000000-fake"  # pinned before CUDA
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock"]


def test_prepare_command_prints_each_familys_engine(
    tmp_path: Path, model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_bundle(tmp_path / "b", model, weightless=(), full=(("sm86",), ()))
    fake_gpus(monkeypatch, RTX3090)
    assert main(["prepare", str(root), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "for GPU 0 (NVIDIA GeForce RTX 3090, CC 8.6):",
        f"  ocr: {root / 'engines' / 'ocr@sm86.engine'} (ocr@sm86: full engine from the bundle)",
    ]
    assert main(["prepare", str(root), "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["families"]["ocr"] == {
        "cell": "ocr@sm86", "path": str(root / "engines" / "ocr@sm86.engine"),
        "cached": False, "refitted": False,
    }
    assert main(["prepare", str(root), "--onnx", "ocr"]) == 2
    assert capsys.readouterr().err == "error: --onnx 'ocr': write it as MODEL=PATH\n"
