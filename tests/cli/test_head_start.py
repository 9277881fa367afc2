"""`build`'s first worker, started before argument parsing only when a build is likely, and
adopted or killed once the arguments are parsed: real builds, real processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from matrix.build.pools import posix_child as build_child
from matrix.cli import head_start, main
from matrix.manifest.types import default_lock_path
from matrix.plan import load
from tests import modelgen


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    modelgen.conv_fp32(tmp_path / "a.onnx")
    manifest = tmp_path / "rtx-matrix.yaml"
    manifest.write_text(
        "version: 1\nmodels:\n  - name: a\n    onnx: a.onnx\n    targets: [sm86, sm89]\n"
    )
    return manifest


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[build_child.Child]:
    """Every worker process started, by the head start or a pool."""
    children: list[build_child.Child] = []

    class Recorded(build_child.Child):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            children.append(self)

    monkeypatch.setattr(build_child, "Child", Recorded)
    return children


def age(path: Path, seconds: int) -> None:
    stamp = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(stamp, stamp))


def test_a_first_build_adopts_the_worker_started_before_parsing(
        project: Path, started: list[build_child.Child], capsys: Any) -> None:
    assert main(["build", "-j1"]) == 0
    assert "built a@sm86" in capsys.readouterr().out
    assert len(started) == 1  # the head start's, not one more
    assert all(child.returncode is not None for child in started)


def test_no_head_start_for_the_portable_pool(
        project: Path, started: list[build_child.Child], monkeypatch: pytest.MonkeyPatch,
        capsys: Any) -> None:
    monkeypatch.setenv("RTX_MATRIX_WORKERS", "portable")
    assert main(["build", "-j1"]) == 0
    assert "built a@sm86" in capsys.readouterr().out
    assert started == []  # the portable pool started its own worker, after parsing


def test_a_noop_run_starts_no_worker(project: Path, started: list[build_child.Child]) -> None:
    assert main(["build", "-j1", "-q"]) == 0
    del started[:]
    assert main(["build", "-j1", "-q"]) == 0
    assert started == []


def test_a_worker_started_and_not_wanted_is_killed(
        project: Path, started: list[build_child.Child], capsys: Any) -> None:
    # Looks like a build to the head start; 64 jobs on this machine means no early pool.
    assert main(["build", "-j64", "-q", str(project)]) == 0
    assert len(started) == 3  # the head start's (killed), then one per cell after the plan
    assert started[0].returncode == -9
    assert all(child.returncode is not None for child in started)


def test_a_run_that_fails_kills_the_worker(
        project: Path, started: list[build_child.Child], capsys: Any) -> None:
    project.write_text("version: 1\nmodels: oops\n")
    assert main(["build", "-j1"]) == 2
    assert len(started) <= 1 and all(child.returncode is not None for child in started)


def test_a_head_start_that_cannot_start_is_no_error(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*args: Any) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(build_child, "Child", no_process)
    head_start.start(["build"])
    assert head_start.take() is None


@pytest.mark.parametrize(
    ("argv", "lock_age", "likely"),
    [
        (["build"], None, True),  # no lock yet
        (["build", "rtx-matrix.yaml", "-j2"], None, True),
        (["build"], 10, True),  # manifest edited after the last lock write
        (["build"], -10, False),  # lock newer: maybe a no-op, the plan decides
        (["build", "--force"], -10, True),
        (["build", "--dry-run"], None, False),
        (["build", "--check"], None, False),
        (["build", "--executor=dask"], None, False),
        (["build", "--pool", "gpu"], None, False),
        (["build", "-o", "other.lock"], None, False),
        (["build", "--help"], None, False),
        (["build", "missing.yaml"], None, False),  # fails on its manifest
        (["plan"], None, False),
        ([], None, False),
    ],
)
def test_what_looks_like_a_build(project: Path, argv: list[str], lock_age: int | None,
                                 likely: bool) -> None:
    if lock_age is not None:
        lock = project.with_suffix(".lock")
        lock.write_text("{}")
        age(lock if lock_age > 0 else project, abs(lock_age))
    assert head_start._looks_like_a_build(argv) is likely


@pytest.mark.parametrize("name", ["rtx-matrix.yaml", "dir/m.yml", "a.b.yaml", "m"])
def test_the_default_lock_is_the_manifests_rule(name: str) -> None:
    assert head_start.default_lock(name) == str(default_lock_path(Path(name)))
    assert head_start.DEFAULT_MANIFEST == load.DEFAULT_MANIFEST
