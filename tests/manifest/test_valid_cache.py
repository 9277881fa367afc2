"""Schema verdicts remembered by content: an unchanged manifest skips jsonschema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from matrix.errors import InputError
from matrix.manifest.loader import load_manifest
from matrix.manifest.valid_cache import known_valid, mark_path

GOOD = "version: 1\nmodels:\n  - {name: m, onnx: m.onnx, targets: [default]}\n"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_good_manifest_is_marked(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    assert not known_valid(path.read_bytes())
    load_manifest(path)
    assert known_valid(path.read_bytes())
    assert mark_path(path.read_bytes()).parent == cache / "valid-manifests"


def test_a_bad_manifest_is_never_marked(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("default", "sm90"))
    with pytest.raises(InputError):
        load_manifest(path)
    assert not known_valid(path.read_bytes())


def test_an_edited_manifest_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    load_manifest(path)
    path.write_text(GOOD + "colour: red\n")
    with pytest.raises(InputError, match="unknown key 'colour'"):
        load_manifest(path)


def test_semantic_checks_still_run_on_a_marked_manifest(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "m.yaml"
    path.write_text(GOOD)
    load_manifest(path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "project" / "engines").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="through a symlink"):
        load_manifest(path)


def test_unchanged_manifest_loads_without_importing_jsonschema(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    load_manifest(path)
    probe = (
        "import sys; from pathlib import Path; from matrix.manifest.loader import load_manifest; "
        f"load_manifest(Path({str(path)!r})); print('jsonschema' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_unwritable_cache_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "file" / "cache"))
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    assert load_manifest(path).models[0].name == "m"


def test_only_the_most_recently_used_marks_are_kept(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from matrix.manifest import valid_cache

    folder = cache / "valid-manifests"
    folder.mkdir(parents=True)
    for i in range(5):  # older marks, the oldest first
        (folder / f"old{i}").touch()
        os.utime(folder / f"old{i}", (1_000_000 + i, 1_000_000 + i))
    used = tmp_path / "used.yaml"
    used.write_text(GOOD)
    load_manifest(used)
    os.utime(mark_path(used.read_bytes()), (1, 1))  # marked long ago ...
    assert known_valid(used.read_bytes())  # ... but used now
    new = tmp_path / "new.yaml"
    new.write_text(GOOD.replace("name: m", "name: n"))
    monkeypatch.setattr(valid_cache, "KEEP", 4)
    load_manifest(new)
    left = sorted(p.name for p in folder.iterdir())
    kept = [mark_path(m.read_bytes()).name for m in (used, new)]
    assert left == sorted([*kept, "old3", "old4"])
