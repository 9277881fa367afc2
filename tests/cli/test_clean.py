"""`rtx-matrix clean`: deletes engines and logs that no lock entry names, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from matrix.cli import main
from tests.cli.test_build import Project
from tests.cli.test_build import project as project  # the fixture

pytestmark = pytest.mark.slow


def test_clean_removes_only_unlocked_engines(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    project.write("a")
    assert project.build() == 0  # b@sm86 leaves the lock; its files stay until clean
    stray = project.engines / "old" / "old@sm80.engine"
    stray.parent.mkdir()
    stray.write_bytes(b"x")
    temp = project.engines / "a" / ".a@sm86.engine.tmp-123"
    temp.write_bytes(b"partial")
    capsys.readouterr()

    assert main(["clean", str(project.manifest), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete" in out and out.endswith("4 files would be deleted\n")
    assert stray.exists()

    assert main(["clean", str(project.manifest)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("4 files deleted\n")
    assert not project.engine("b@sm86").exists()
    assert not project.engine("b@sm86").with_suffix(".log").exists()
    assert not stray.exists() and not stray.parent.exists() and not temp.exists()
    assert project.engine("a@sm86").exists() and project.engine("a@sm89").exists()
    assert project.engine("a@sm86").with_suffix(".log").exists()
    assert (project.engines / ".rtx-matrix").is_dir()
    assert main(["build", str(project.manifest)]) == 0
    assert capsys.readouterr().out == "2 cells up to date\n"
