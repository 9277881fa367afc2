"""The read-only survey: what it reads, and when it must be made again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from matrix.atomic import write_atomic
from matrix.file_stat import file_stat
from matrix.lockfile.survey import Scope, survey
from tests import modelgen


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    modelgen.matmul_fp16(tmp_path / "m.onnx")
    manifest = tmp_path / "rtx-matrix.yaml"
    manifest.write_text(
        "version: 1\nmodels:\n  - name: m\n    onnx: m.onnx\n    targets: [sm86, default]\n"
    )
    return manifest


def test_survey_lists_new_cells_and_selects_by_glob(project: Path) -> None:
    everything = survey(project)
    assert [s.cell.id for s in everything.to_build] == ["m@sm86", "m@default"]
    assert [s.reasons for s in everything.to_build] == [("new cell",), ("new cell",)]
    some = survey(project, Scope(patterns=("m@sm*",)))
    assert [s.cell.id for s in some.to_build] == ["m@sm86"]


def test_survey_is_current_until_the_lock_is_rewritten(project: Path) -> None:
    lock = project.with_suffix(".lock")
    first = survey(project)
    assert first.still_current()  # no lock then, none now
    write_atomic(lock, "{}")
    assert not first.still_current()
    second_look = replace(first, lock_signature=file_stat(lock))
    assert second_look.still_current()
    write_atomic(lock, "{}")  # same bytes, same size, maybe the same mtime tick: a new inode
    assert not second_look.still_current()
