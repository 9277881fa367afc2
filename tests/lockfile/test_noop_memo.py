"""The no-op memo (`matrix.lockfile.noop_memo`), through real `rtx-matrix build` processes on
real engines. Whether a run planned is seen in `-X importtime`: a replayed no-op never
imports the survey."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matrix.cli import main
from matrix.lockfile import noop_memo
from tests import modelgen

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
output: engines
models:
  - name: a
    onnx: models/a.onnx
    targets: [{targets}]
"""
AN_HOUR = 3600 * 10**9


def write_project(root: Path, targets: str = "sm86, sm89") -> Path:
    modelgen.conv_fp32(root / "models" / "a.onnx", seed=1)
    manifest = root / "rtx-matrix.yaml"
    manifest.write_text(MANIFEST.format(targets=targets))
    return manifest


def age(root: Path) -> None:
    """Every file of the project an hour old: no stat of it is racy any more."""
    then = time.time_ns() - AN_HOUR
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(then, then))


def console_build(manifest: Path, **env: str) -> tuple[str, bool]:
    """What `rtx-matrix build MANIFEST` printed, and whether it planned."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "matrix", "build", str(manifest)],
        capture_output=True, text=True, check=True, cwd=manifest.parent,
        env={**os.environ, **env},
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    return result.stdout, "matrix.lockfile.survey" in imported


@pytest.fixture
def built(tmp_path: Path) -> Path:
    manifest = write_project(tmp_path)
    assert main(["build", "-j2", str(manifest)]) == 0
    age(tmp_path)
    return manifest


def test_the_same_noop_again_is_replayed_without_planning(built: Path) -> None:
    assert console_build(built) == ("2 cells up to date\n", True)
    assert console_build(built) == ("2 cells up to date\n", False)
    assert console_build(built) == ("2 cells up to date\n", False)


@pytest.mark.parametrize("change", ["engine", "model", "manifest", "lock", "environment"])
def test_any_change_to_what_the_verdict_read_plans_again(built: Path, change: str) -> None:
    root = built.parent
    console_build(built)
    env = {}
    if change == "engine":
        (root / "engines" / "a" / "a@sm89.engine").write_bytes(b"")
    elif change == "model":
        modelgen.conv_fp32(root / "models" / "a.onnx", seed=2)
    elif change == "manifest":
        built.write_text(built.read_text() + "\n")
    elif change == "lock":
        lock = root / "rtx-matrix.lock"
        lock.write_bytes(lock.read_bytes())  # same bytes, a new stat
    else:
        env["RTX_MATRIX_ANYTHING"] = "1"
    out, planned = console_build(built, **env)
    assert planned
    if change == "engine":
        assert "built a@sm89" in out and "1 built" in out
    elif change == "model":
        assert "2 built" in out
    else:
        assert out == "2 cells up to date\n"


def test_files_written_just_before_the_run_leave_no_memo(tmp_path: Path) -> None:
    manifest = write_project(tmp_path)
    assert main(["build", "-j2", str(manifest)]) == 0
    assert console_build(manifest) == ("2 cells up to date\n", True)
    assert console_build(manifest) == ("2 cells up to date\n", True)


def test_python_callers_and_other_command_lines_always_plan(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", str(built)]) == 0
    assert main(["build", str(built)]) == 0
    assert capsys.readouterr().out == "2 cells up to date\n" * 2
    assert not noop_memo.eligible(["build", "-q", str(built)])
    assert not noop_memo.eligible(["build", str(built), "a@sm86"])
    assert not noop_memo.eligible(["status", str(built)])
    assert noop_memo.replay(["build", str(built)]) is None  # nothing remembered in-process


def test_a_plan_with_gpu_cells_is_never_remembered(tmp_path: Path) -> None:
    manifest = write_project(tmp_path, targets="sm86, current")
    assert main(["build", "-j2", str(manifest)]) == 0
    age(tmp_path)
    first, planned = console_build(manifest)
    assert first.startswith("1 cell up to date\nskipped a@current: needs a GPU") and planned
    assert console_build(manifest) == (first, True)


def test_a_build_that_leaves_every_cell_up_to_date_leaves_the_memo(tmp_path: Path) -> None:
    """The first run after a build replays too, and says what planning says."""
    manifest = write_project(tmp_path)
    age(tmp_path)
    out, planned = console_build(manifest)
    assert "2 built" in out and planned
    assert console_build(manifest) == ("2 cells up to date\n", False)
    assert console_build(manifest, RTX_MATRIX_ANYTHING="1") == ("2 cells up to date\n", True)

    manifest.write_text(MANIFEST.format(targets="sm86, sm89, sm120"))
    age(tmp_path)
    out, planned = console_build(manifest)
    assert "built a@sm120" in out and "1 built" in out and "2 up to date" in out and planned
    assert console_build(manifest) == ("3 cells up to date\n", False)
    assert console_build(manifest, RTX_MATRIX_OTHER="1") == ("3 cells up to date\n", True)
