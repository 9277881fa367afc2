"""The plan cache: an unchanged project loads its plan; any change to what made it is seen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix import pickle_cache
from matrix.errors import InputError
from matrix.plan import cache
from matrix.plan.load import load_plan
from matrix.versions import VERSION_OVERRIDE, installed_tensorrt_rtx
from tests import modelgen

MANIFEST = """\
version: 1
models:
  - name: m
    onnx: models/m.onnx
    targets: [sm86, default]
  - name: x
    onnx: models/x.onnx
    targets: [sm89]
"""
AGE_NS = 10 * 10**9


pytestmark = pytest.mark.usefixtures("code_not_racy")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    modelgen.conv_fp32(tmp_path / "models" / "m.onnx")
    modelgen.external_data_model(tmp_path / "models" / "x.onnx", size=4096)
    manifest = tmp_path / "rtx-matrix.yaml"
    manifest.write_text(MANIFEST)
    age(manifest, *(tmp_path / "models").iterdir())
    return manifest


@pytest.fixture
def version_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    installed_tensorrt_rtx.cache_clear()
    yield monkeypatch
    monkeypatch.delenv(VERSION_OVERRIDE, raising=False)
    installed_tensorrt_rtx.cache_clear()


def age(*paths: Path) -> None:
    """As if written ten seconds ago: no longer racy."""
    old = time.time_ns() - AGE_NS
    for path in paths:
        os.utime(path, ns=(old, old), follow_symlinks=False)


def keep_stat(path: Path, write: bytes) -> None:
    """New bytes of the same size, same mtime and inode: what no stat can see."""
    before = path.stat()
    assert len(write) == before.st_size
    path.write_bytes(write)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_unchanged_project_loads_its_plan(project: Path) -> None:
    assert cache.load(project) is None
    plan = load_plan(project)
    remembered = cache.load(project)
    assert remembered == plan
    assert [c.id for c in remembered.cells] == ["m@sm86", "m@default", "x@sm89"]
    assert remembered.manifest.locate("$.models[1].onnx") == (7, 5)
    assert (project.parent / "cache" / "plans").is_dir()


def test_a_hit_imports_neither_yaml_nor_the_planner(project: Path) -> None:
    load_plan(project)
    probe = (
        "import sys; from pathlib import Path; from matrix.plan.load import load_plan; "
        f"plan = load_plan(Path({str(project)!r})); print(len(plan.cells), "
        "sorted(m for m in sys.modules if m in ('yaml', 'matrix.plan.planner', "
        "'matrix.manifest.loader', 'matrix.facts.cache')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "3 []"


def test_an_edited_manifest_is_loaded_again(project: Path) -> None:
    load_plan(project)
    project.write_text(MANIFEST.replace("[sm89]", "[sm89, sm120]"))
    assert cache.load(project) is None
    assert [c.id for c in load_plan(project).cells][-1] == "x@sm120"


def test_racy_sources_are_not_stored(project: Path) -> None:
    """A file modified just before it was read may change again within its mtime's tick."""
    project.touch()
    load_plan(project)
    assert cache.load(project) is None
    keep_stat(project, project.read_bytes().replace(b"sm86", b"sm80"))
    assert load_plan(project).cells[0].id == "m@sm80"
    age(project)
    load_plan(project)
    assert cache.load(project) is not None


def test_an_aged_entry_trusts_the_stat_like_make(project: Path) -> None:
    plan = load_plan(project)
    keep_stat(project, project.read_bytes().replace(b"sm86", b"sm80"))
    assert cache.load(project) == plan


def test_a_changed_model_is_seen(project: Path) -> None:
    plan = load_plan(project)
    modelgen.conv_fp32(project.parent / "models" / "m.onnx", seed=5)
    assert cache.load(project) is None
    assert load_plan(project).facts["m"].digest != plan.facts["m"].digest


def test_changed_external_data_is_seen(project: Path) -> None:
    plan = load_plan(project)
    data = project.parent / "models" / "x.onnx.data"
    data.write_bytes(bytes(reversed(data.read_bytes())))
    assert cache.load(project) is None
    assert load_plan(project).facts["x"].weights_digest != plan.facts["x"].weights_digest


def test_a_model_replaced_within_one_tick_is_seen(project: Path) -> None:
    """Same size, same mtime, but renamed into place: a new inode."""
    load_plan(project)
    model = project.parent / "models" / "m.onnx"
    stat = model.stat()
    other = modelgen.conv_fp32(project.parent / "other.onnx", seed=5)
    assert other.stat().st_size == stat.st_size
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other.replace(model)
    assert cache.load(project) is None


def test_a_repointed_symlink_is_seen(project: Path) -> None:
    """The same file through another path: equal stats, another resolved path."""
    models = project.parent / "models"
    (project.parent / "a").mkdir()
    (project.parent / "b").mkdir()
    os.link(models / "m.onnx", project.parent / "a" / "m.onnx")
    os.link(models / "m.onnx", project.parent / "b" / "m.onnx")
    (project.parent / "current").symlink_to("a")
    project.write_text(MANIFEST.replace("models/m.onnx", "current/m.onnx"))
    age(project, project.parent / "current")
    assert str(load_plan(project).manifest.models[0].onnx).endswith("/a/m.onnx")
    (project.parent / "current").unlink()
    (project.parent / "current").symlink_to("b")
    age(project.parent / "current")
    assert cache.load(project) is None
    assert str(load_plan(project).manifest.models[0].onnx).endswith("/b/m.onnx")


def test_a_symlinked_output_is_still_refused(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    load_plan(project)
    (project.parent / "engines").symlink_to(tmp_path_factory.mktemp("elsewhere"))
    assert cache.load(project) is None
    with pytest.raises(InputError, match="through a symlink"):
        load_plan(project)


def test_another_library_version_is_seen(project: Path, version_hook: pytest.MonkeyPatch) -> None:
    load_plan(project)
    version_hook.setenv(VERSION_OVERRIDE, "1.7.9.9")
    installed_tensorrt_rtx.cache_clear()
    assert cache.load(project) is None
    load_plan(project)
    assert cache.load(project) is not None


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in for rtx-matrix's own code folder, whose files a test may edit."""
    folder = tmp_path / "package"
    (folder / "plan").mkdir(parents=True)
    (folder / "plan" / "rules.py").write_text("RULES = 1\n")
    age(folder / "plan" / "rules.py")
    monkeypatch.setattr(pickle_cache, "_PACKAGE", str(folder))
    pickle_cache.code_as_imported.cache_clear()
    yield folder
    pickle_cache.code_as_imported.cache_clear()


def test_edited_code_is_seen(project: Path, package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_plan(project)
    assert cache.load(project) is not None
    (package / "plan" / "rules.py").write_text("RULES = 2\n")
    assert cache.load(project) is not None  # this process still runs the code it imported
    monkeypatch.setattr(pickle_cache, "IMPORTED_AT_NS", time.time_ns() + 3 * 10**9)
    pickle_cache.code_as_imported.cache_clear()  # a process started after the edit
    assert cache.load(project) is None
    load_plan(project)
    assert cache.load(project) is not None


def test_a_process_older_than_its_code_stores_nothing(project: Path, package: Path) -> None:
    cache.load(project)
    (package / "plan" / "rules.py").write_text("RULES = 2\n")  # after this process began
    pickle_cache.code_as_imported.cache_clear()
    load_plan(project)
    assert cache.load(project) is None
    assert not (project.parent / "cache" / "plans").exists()


def test_code_changed_while_planning_stores_nothing(project: Path, package: Path) -> None:
    """Its planner may be the edited one, imported after the edit: no key would tell."""
    cache.load(project)  # this process takes note of its code
    (package / "plan" / "rules.py").write_text("RULES = 2\n")
    age(package / "plan" / "rules.py")  # however old the edit looks
    load_plan(project)
    assert cache.load(project) is None


def test_an_entry_others_may_write_is_not_read(project: Path) -> None:
    load_plan(project)
    entry = cache.entry_path(str(project))
    entry.chmod(0o622)
    assert cache.load(project) is None
    entry.chmod(0o600)
    assert cache.load(project) is not None
    entry.write_bytes(entry.read_bytes()[:100])
    assert cache.load(project) is None


def test_only_the_most_recently_stored_entries_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "KEEP", 2)
    age(modelgen.conv_fp32(tmp_path / "models" / "m.onnx"))
    manifests = []
    for name in ("a", "b", "c"):
        manifests.append(tmp_path / f"{name}.yaml")
        manifests[-1].write_text(MANIFEST.split("  - name: x")[0])
        age(manifests[-1])
        load_plan(manifests[-1])
        time.sleep(0.01)
    assert [cache.load(m) is not None for m in manifests] == [False, True, True]
    assert len(list((tmp_path / "cache" / "plans").iterdir())) == 2
