"""The installed TensorRT-RTX version, read without importing the library."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from matrix import versions


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    versions.installed_tensorrt_rtx.cache_clear()


def test_the_dist_info_folder_gives_what_the_metadata_says() -> None:
    assert versions._dist_info_version() == metadata.version("tensorrt_rtx")
    assert versions.installed_tensorrt_rtx() == metadata.version("tensorrt_rtx")


def test_reading_it_imports_neither_the_library_nor_importlib_metadata() -> None:
    code = ("import sys; from matrix.versions import installed_tensorrt_rtx as v; v(); "
            "print(sorted({'tensorrt_rtx', 'importlib.metadata'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"


@pytest.mark.parametrize("folders", [[], ["tensorrt_rtx-1.7.0.1", "tensorrt_rtx-1.7.1.116"]])
def test_no_single_dist_info_folder_falls_back_to_the_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folders: list[str]) -> None:
    package = tmp_path / "tensorrt_rtx" / "__init__.py"
    package.parent.mkdir()
    package.touch()
    for name in folders:
        (tmp_path / f"{name}.dist-info").mkdir()
    monkeypatch.setattr(versions, "find_spec",
                        lambda name: ModuleSpec(name, None, origin=str(package)))
    assert versions._dist_info_version() is None
    assert versions.installed_tensorrt_rtx() == metadata.version("tensorrt_rtx")


def test_the_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(versions.VERSION_OVERRIDE, "1.8.0.1")
    assert versions.installed_tensorrt_rtx() == "1.8.0.1"
