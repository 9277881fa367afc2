"""`rtx-matrix bundle`, `bundle verify` and `select` on engines built by the real library.

One project is built once per module (real TensorRT-RTX CPU builds). Its weightless cell
cannot be built here (no GPU): `weightless_stand_in` records a real full engine under it in
the lock, with the fingerprint the planner expects, so everything downstream of the build
(bundle.json's refit section, --with-onnx, prepare) runs on real files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from matrix import gpu
from matrix.atomic import sha256_file
from matrix.build import builder
from matrix.bundle import make
from matrix.cli import main
from matrix.lockfile.fingerprint import fingerprint
from matrix.lockfile.freshness import engine_path, relative_posix
from matrix.lockfile.io import read_lock, write_lock
from matrix.lockfile.types import LockEntry, ModelRef
from matrix.plan.load import load_plan
from matrix.runtime.report import human_bytes
from matrix.schemas import load_schema
from matrix.versions import installed_tensorrt_rtx
from tests import modelgen
from tests.factories import build_request
from tests.test_gpu import H100, H100_REFUSAL, RTX3090, FakeNvml

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
targets:
  ampere: [sm80, sm86]
models:
  - name: det-fp8
    family: det
    onnx: models/det-fp8.onnx
    targets: [default, sm89]
  - name: det-fp16
    family: det
    onnx: models/det-fp16.onnx
    targets: [default, ampere, sm75]
  - name: ocr
    onnx: models/ocr/ocr.onnx
    targets: [sm86]
    weightless: [false, true]
"""
CELLS = [
    "det-fp8@default", "det-fp8@sm89", "det-fp16@default", "det-fp16@ampere", "det-fp16@sm75",
    "ocr@sm86", "ocr@sm86+weightless",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, built for real; its weightless cell stood in for (see the module doc)."""
    root = tmp_path_factory.mktemp("project")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RTX_MATRIX_CACHE_DIR", str(cache))
        modelgen.fp8_qdq_matmul(root / "models" / "det-fp8.onnx")
        modelgen.matmul_fp16(root / "models" / "det-fp16.onnx")
        modelgen.external_data_model(root / "models" / "ocr" / "ocr.onnx", size=2048)
        (root / "rtx-matrix.yaml").write_text(MANIFEST, encoding="utf-8")
        assert main(["build", "-j2", "-q", str(root / "rtx-matrix.yaml")]) == 0
        weightless_stand_in(root / "rtx-matrix.yaml", "ocr@sm86+weightless")
    return root


def weightless_stand_in(manifest: Path, cell_id: str) -> None:
    """Lock `cell_id` (weightless, unbuildable here) with a real full engine of its model and
    the fingerprint the planner computes for the weightless cell, as a GPU build would."""
    plan = load_plan(manifest)
    cell = next(c for c in plan.cells if c.id == cell_id)
    facts = plan.facts[cell.model.name]
    target = engine_path(plan.manifest, cell)
    ccs = tuple(cc.name for cc in cell.target.ccs)
    result = builder.build(build_request(target.parent, cell.model.onnx, cell_id, ccs=ccs,
                                         engine_path=str(target)))
    assert result.ok and result.sha256 and result.size, result.error
    lock_path = plan.manifest.lock_path
    lock = read_lock(lock_path)
    assert lock is not None
    entry = LockEntry(
        path=relative_posix(target, lock_path.parent),
        sha256=result.sha256,
        size=result.size,
        model=ModelRef(cell.model.name, relative_posix(cell.model.onnx, lock_path.parent),
                       facts.digest, facts.graph_digest, facts.weights_digest),
        targets=cell.target.spec,
        resolved_targets=ccs,
        runs_on=cell.runs_on,
        weightless=True,
        options=MappingProxyType({"builder": {}, "profiles": []}),
        fingerprint=fingerprint(cell, facts, installed_tensorrt_rtx(), ccs),
        build_seconds=result.seconds,
        built_at="2026-01-01T00:00:00Z",
        header_mask=result.header_mask or 0,
        gpu="NVIDIA GeForce RTX 3090",
        io=result.io,
        weights_bytes=result.weights_bytes,
        stripped_weights_bytes=2048,
    )
    engines = {**lock.engines, cell_id: entry}
    write_lock(lock_path, dataclasses.replace(lock, engines=MappingProxyType(engines)))


@pytest.fixture
def project(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the built project (tests may change it), as the current folder."""
    root = tmp_path / "project"
    shutil.copytree(built, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    return root


def bundle(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(["bundle", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def bundle_json(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    return data


# ------------------------------------------------------------------------------- bundle


def test_bundle_holds_every_locked_engine_described_as_the_lock_says(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = bundle(capsys, "-o", "dist")
    assert (code, err) == (0, [])
    data = bundle_json(project / "dist")
    assert list(Draft202012Validator(load_schema("bundle")).iter_errors(data)) == []
    assert [e["cell"] for e in data["engines"]] == CELLS  # manifest order
    assert data["families"] == [
        {"name": "det", "models": ["det-fp8", "det-fp16"]},
        {"name": "ocr", "models": ["ocr"]},
    ]
    lock = read_lock(project / "rtx-matrix.lock")
    assert lock is not None
    for described in data["engines"]:
        entry = lock.engines[described["cell"]]
        file = project / "dist" / described["path"]
        assert described["path"] == f"engines/{described['cell']}.engine"
        assert (described["sha256"], described["size"]) == (sha256_file(file), file.stat().st_size)
        assert (described["sha256"], described["size"]) == (entry.sha256, entry.size)
        assert described["runs_on"] == list(entry.runs_on)
        assert described["built_for"] == list(entry.resolved_targets)
        assert described["tensorrt_rtx"] == installed_tensorrt_rtx()
        # Hard links: the bundle's file is the build's engine, not a copy.
        assert os.path.samefile(file, project / entry.path)
    fp8, fp16 = data["engines"][0], data["engines"][3]
    assert fp8["dtypes"] == ["fp32", "fp8"] and fp16["dtypes"] == ["fp16"]
    assert fp8["runs_on"] == ["sm89", "sm120", "sm121", "newer"]  # the narrowed default
    assert fp16["built_for"] == ["sm80", "sm86"] and fp16["family"] == "det"
    assert fp16["io"] == [
        {"dtype": "fp16", "mode": "input", "name": "x", "shape": [1, 16]},
        {"dtype": "fp16", "mode": "output", "name": "y", "shape": [1, 8]},
    ]
    assert fp16["weights_bytes"] == 16 * 8 * 2  # the fp16 weight matrix, as the builder said
    assert [e["refit"] is None for e in data["engines"]] == [True] * 6 + [False]
    total = human_bytes(sum(e["size"] for e in data["engines"]))
    assert out[-1] == f"bundled 7 engines ({total}) into dist"
    assert out[0].startswith("linked engines/det-fp8@default.engine (")


def test_weightless_engines_say_what_refit_needs_and_with_onnx_carries_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = project / "models" / "ocr"
    assert bundle(capsys, "rtx-matrix.yaml", "-o", "plain", "ocr@sm86+weightless")[0] == 0
    refit = bundle_json(project / "plain")["engines"][0]["refit"]
    assert refit["files"] == [
        {"name": "ocr.onnx", "path": None, "sha256": sha256_file(model / "ocr.onnx"),
         "size": (model / "ocr.onnx").stat().st_size},
        {"name": "ocr.onnx.data", "path": None, "sha256": sha256_file(model / "ocr.onnx.data"),
         "size": (model / "ocr.onnx.data").stat().st_size},
    ]
    lock = read_lock(project / "rtx-matrix.lock")
    assert lock is not None
    assert refit["graph_digest"] == lock.engines["ocr@sm86+weightless"].model.graph_digest

    code, out, _ = bundle(
        capsys, "rtx-matrix.yaml", "-o", "full", "--with-onnx", "--copy", "ocr@sm86+weightless"
    )
    assert code == 0
    files = bundle_json(project / "full")["engines"][0]["refit"]["files"]
    assert [f["path"] for f in files] == ["onnx/ocr/ocr.onnx", "onnx/ocr/ocr.onnx.data"]
    for f in files:
        assert sha256_file(project / "full" / f["path"]) == f["sha256"]
        assert not os.path.samefile(project / "full" / f["path"], model / f["name"])  # --copy
    assert out[-1].startswith("bundled 1 engine and 2 ONNX files (")
    assert main(["bundle", "verify", "full"]) == 0


def test_cells_narrow_the_bundle_and_families_keep_only_bundled_models(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "det-fp16", "ocr@sm86")[0] == 0
    data = bundle_json(project / "dist")
    assert [e["cell"] for e in data["engines"]] == [
        "det-fp16@default", "det-fp16@ampere", "det-fp16@sm75", "ocr@sm86",
    ]
    assert data["families"] == [
        {"name": "det", "models": ["det-fp16"]}, {"name": "ocr", "models": ["ocr"]},
    ]


def test_a_second_bundle_into_the_folder_replaces_the_first(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bundle(capsys, "-o", "dist")[0] == 0
    code, out, _ = bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "-q", "det-fp8")
    assert code == 0
    assert "removed engines/det-fp16@sm75.engine (no longer in the bundle)" in out
    assert sorted(p.name for p in (project / "dist" / "engines").iterdir()) == [
        "det-fp8@default.engine", "det-fp8@sm89.engine",
    ]
    assert main(["bundle", "verify", "dist"]) == 0


def test_stale_cells_are_refused_and_nothing_is_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    modelgen.matmul_fp16(project / "models" / "det-fp16.onnx", seed=9)  # new weights
    code, _, err = bundle(capsys, "-o", "dist")
    assert code == 1
    assert err == [
        "error: out of date: det-fp16@default (model changed); det-fp16@ampere (model "
        "changed); det-fp16@sm75 (model changed): run `rtx-matrix build` before bundling"
    ]
    assert not (project / "dist").exists()


def test_a_weightless_engine_stays_bundleable_when_only_the_weights_changed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    modelgen.external_data_model(project / "models" / "ocr" / "ocr.onnx", size=2048, seed=5)
    code = bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "--with-onnx", "ocr@sm86+weightless")
    assert code[0] == 0
    refit = bundle_json(project / "dist")["engines"][0]["refit"]
    data = project / "models" / "ocr" / "ocr.onnx.data"
    assert refit["files"][1]["sha256"] == sha256_file(data)  # the new weights go to refit


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["rtx-matrix.yaml", "-o", "dist", "ocr@sm86+weightless", "nope@sm86"],
         "error: no cell matches 'nope@sm86' (give a cell id, model name or glob)"),
        (["dist"], "error: bundle needs -o DIR, the folder to write the bundle to"),
        (["-o", "models"], "error: models: not empty and not a bundle (no bundle.json): name a "
                           "new folder"),
        (["-o", "engines/dist"], "error: engines/dist: inside the build's output folder "
                                 "{root}/engines, where `rtx-matrix clean` deletes engines the "
                                 "lock does not name: choose another folder"),
        (["--lock", "other.lock", "-o", "dist"],
         "error: {root}/other.lock: no such lockfile: run `rtx-matrix build` first"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    code, _, err = bundle(capsys, *args)
    assert code == 2
    assert err == [line.format(root=project)]
    assert not (project / "dist").exists()


def test_a_cell_asked_for_by_id_without_an_engine_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock_path = project / "rtx-matrix.lock"
    lock = read_lock(lock_path)
    assert lock is not None
    kept = {k: v for k, v in lock.engines.items() if k != "ocr@sm86+weightless"}
    write_lock(lock_path, dataclasses.replace(lock, engines=MappingProxyType(kept)))
    code, _, err = bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "ocr@sm86+weightless")
    assert (code, err) == (2, [
        "error: ocr@sm86+weightless: the lock has no engine for it: run `rtx-matrix build` first"
    ])
    # Named by model: a cell without an engine is left out, and the output says so.
    code, out, _ = bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "ocr")
    assert code == 0
    assert "left out, the lock has no engine for them: ocr@sm86+weightless" in out


def test_an_interrupted_bundle_leaves_a_folder_that_does_not_verify(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An earlier, complete bundle in the folder first.
    assert bundle(capsys, "rtx-matrix.yaml", "-o", "dist", "det-fp8")[0] == 0
    placed: list[Path] = []
    real_place = make.place

    def place_then_die(*args: Any, **kwargs: Any) -> str:
        if len(placed) == 3:
            raise KeyboardInterrupt  # Ctrl-C halfway
        placed.append(args[1])
        return real_place(*args, **kwargs)

    monkeypatch.setattr(make, "place", place_then_die)
    assert bundle(capsys, "-o", "dist")[0] == 130
    assert len(placed) == 3
    code, _, err = bundle(capsys, "verify", "dist")
    assert (code, err) == (2, [
        "error: dist: no bundle.json: not a bundle, or its writing did not finish"
    ])
    assert not list((project / "dist" / "engines").glob(".*tmp*"))


# ------------------------------------------------------------------------------ verify


@pytest.fixture
def copied(project: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A bundle of copies (tampering with hard links would change the build's engines)."""
    assert bundle(capsys, "-o", "dist", "--copy", "--with-onnx")[0] == 0
    return project / "dist"


def test_verify_passes_an_intact_bundle(copied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bundle(capsys, "verify", "dist")
    assert (code, err) == (0, [])
    assert out[0].startswith("dist: 9 files match bundle.json (7 engines, ")


def test_verify_names_every_tampered_missing_or_truncated_file(
    copied: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = copied / "engines" / "det-fp16@ampere.engine"
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    tampered.write_bytes(bytes(data))
    truncated = copied / "onnx" / "ocr" / "ocr.onnx.data"
    truncated.write_bytes(truncated.read_bytes()[:-2])
    (copied / "engines" / "det-fp8@sm89.engine").unlink()
    listed = {e["cell"]: e for e in bundle_json(copied)["engines"]}
    refit_files = listed["ocr@sm86+weightless"]["refit"]["files"]

    code, _, err = bundle(capsys, "verify", "dist")
    assert code == 1
    assert err == [
        "error: dist/engines/det-fp8@sm89.engine: missing (bundle.json lists it)",
        f"error: dist/engines/det-fp16@ampere.engine: sha256 {sha256_file(tampered)} where "
        f"bundle.json lists {listed['det-fp16@ampere']['sha256']}: the file was modified",
        f"error: dist/onnx/ocr/ocr.onnx.data: {refit_files[1]['size'] - 2} bytes where "
        f"bundle.json lists {refit_files[1]['size']}: not the file it names",
    ]


def test_verify_json(copied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copied / "engines" / "ocr@sm86.engine").write_bytes(b"x")
    code = main(["bundle", "verify", "dist", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False and report["files"] == 9
    assert report["problems"] == [
        f"dist/engines/ocr@sm86.engine: 1 bytes where bundle.json lists "
        f"{bundle_json(copied)['engines'][5]['size']}: not the file it names"
    ]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("{", "error: dist/bundle.json: not valid JSON (Expecting property name enclosed in "
              "double quotes at line 1)"),
        ('{"version": 2}', "error: dist/bundle.json: not a bundle this rtx-matrix reads (bundle "
                           "version 2; this rtx-matrix reads 1)"),
        ('{"version": 1, "tool": "x"}', "error: dist/bundle.json: not a bundle this rtx-matrix "
                                        "reads (missing 'tensorrt_rtx')"),
    ],
)
def test_a_bad_bundle_json_is_one_line(
    project: Path, capsys: pytest.CaptureFixture[str], content: str, line: str
) -> None:
    (project / "dist").mkdir()
    (project / "dist" / "bundle.json").write_text(content)
    assert bundle(capsys, "verify", "dist")[1:] == ([], [line])


def test_a_bundle_naming_files_outside_itself_is_refused(
    copied: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bundle_json(copied)
    data["engines"][0]["path"] = "../rtx-matrix.lock"
    (copied / "bundle.json").write_text(json.dumps(data))
    assert bundle(capsys, "verify", "dist")[2] == [
        "error: dist/bundle.json: not a bundle this rtx-matrix reads ('../rtx-matrix.lock' is "
        "not a path inside the bundle)"
    ]


# ------------------------------------------------------------------------------ select


def test_select_on_the_real_bundle(copied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["select", "dist", "--cc", "8.6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "for CC 8.6:",
        "  det: engines/det-fp16@ampere.engine (det-fp16@ampere: built for sm80 sm86, "
        "preferred det-fp8 has no engine for it)",
        "    full, " + out[2].split("full, ")[1],
    ]
    assert out[2].endswith("; 256 bytes of weights; x fp16[1,16] -> y fp16[1,8]")
    assert out[3] == "  ocr: engines/ocr@sm86.engine (ocr@sm86: built for sm86)"

    assert main(["select", "dist", "--cc", "sm89", "--json"]) == 1  # ocr: nothing for 8.9
    chosen = json.loads(capsys.readouterr().out)
    assert {f: c["engine"]["cell"] for f, c in chosen["families"].items()} == {
        "det": "det-fp8@sm89"
    }
    assert chosen["families"]["det"]["fit"] == "exact"
    assert chosen["missing"] == {"ocr": "no engine runs on CC 8.9 (its engines run on sm86)"}


def test_select_exit_codes(copied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["select", "dist", "--cc", "7.5"]) == 1  # ocr has no Turing engine
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  ocr: no engine runs on CC 7.5 (its engines run on sm86)"
    )
    assert main(["select", "dist", "--cc", "10.0"]) == 3
    assert capsys.readouterr().err == (
        "error: CC 10.0 is not a TensorRT-RTX target: TensorRT-RTX builds and runs on RTX-class "
        "GPUs (CC 7.5, 8.0, 8.6, 8.9, 12.0, 12.1); on this GPU a 'current' build yields an "
        "engine that runs nowhere and weightless builds fail\n"
    )


def test_schema_command_prints_the_bundle_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "bundle"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "rtx-matrix bundle"


@pytest.mark.parametrize(
    ("devices", "args", "code", "first_line"),
    [
        ((RTX3090,), [], 0, "for GPU 0 (NVIDIA GeForce RTX 3090, CC 8.6):"),
        ((H100, RTX3090), [], 0, "for GPU 1 (NVIDIA GeForce RTX 3090, CC 8.6):"),
        ((H100, RTX3090), ["--gpu", "0"], 3, f"error: {H100_REFUSAL}"),
        ((RTX3090,), ["--gpu", "5"], 3,
         "error: --gpu 5: no such GPU; found GPU 0 (NVIDIA GeForce RTX 3090, CC 8.6)"),
        ((), [], 3, "error: no GPU found"),
    ],
)
def test_select_asks_nvml_for_the_gpu(
    copied: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    devices: tuple[tuple[str, tuple[int, int]], ...], args: list[str], code: int,
    first_line: str,
) -> None:
    answer = gpu.discover(FakeNvml(devices=devices))
    monkeypatch.setattr(gpu, "discover", lambda nvml=None: answer)
    assert main(["select", "dist", *args]) == code
    captured = capsys.readouterr()
    assert (captured.out + captured.err).splitlines()[0] == first_line
