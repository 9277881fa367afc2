"""Memory-aware builds end to end: a generated model of 256 MiB of external weights, real
TensorRT-RTX builds, budgets smaller than two cells need, and workers the (injected) kernel
says ran out of memory.

When cells built is observed through the display: the run's own start and end events, with
the time each arrived (only the display is replaced; builds, workers and lock are real).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.build import progress
from matrix.build.memory import MiB, estimate_peak, memory_text
from matrix.build.messages import ProgressEvent
from matrix.build.oom import OOM_EVENTS_ENV
from matrix.cli import main
from matrix.lockfile.io import read_lock
from matrix.lockfile.types import Lock
from tests import modelgen

pytestmark = pytest.mark.slow

BIG = 256 * MiB


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One 256 MiB model for the module, deleted after it (pytest keeps old tmp folders)."""
    folder = tmp_path_factory.mktemp("big-model")
    yield modelgen.external_data_model(folder / "big.onnx", size=BIG)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path, big_model: Path) -> Iterator[Path]:
    """A manifest folder: `big` links the module's model, `small` is a tiny conv model."""
    (tmp_path / "models").mkdir()
    for source in (big_model, big_model.with_name(f"{big_model.name}.data")):
        os.symlink(source, tmp_path / "models" / source.name)
    modelgen.conv_fp32(tmp_path / "models" / "small.onnx")
    modelgen.slow_conv_stack(tmp_path / "models" / "slow.onnx", layers=250)
    yield tmp_path
    shutil.rmtree(tmp_path / "engines", ignore_errors=True)  # half a GiB of engines


def write_manifest(project: Path, **targets: str) -> Path:
    lines = ["version: 1", "models:"]
    for model, listed in targets.items():
        lines += [f"  - name: {model}", f"    onnx: models/{model}.onnx"]
        lines += [f"    targets: [{listed}]"]
    manifest = project / "rtx-matrix.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


class Recorder(progress.Display):
    """The display of a run, recording each cell's start and end as they arrive."""

    def __init__(self, on_start: Callable[[ProgressEvent], None] | None = None) -> None:
        self.events: list[tuple[float, str, str]] = []
        self.on_start = on_start

    def event(self, event: ProgressEvent) -> None:
        if event.kind in ("start", "end", "retry"):
            self.events.append((time.monotonic(), event.cell_id, event.kind))
        if event.kind == "start" and self.on_start is not None:
            self.on_start(event)

    def spans(self) -> list[tuple[str, float, float]]:
        """(cell, start, end) of every build, in starting order."""
        open_since: dict[str, float] = {}
        spans = []
        for at, cell, kind in self.events:
            if kind == "start":
                open_since[cell] = at
            elif cell in open_since:  # `end`, or `retry`: a killed worker sends no end
                spans.append((cell, open_since.pop(cell), at))
        return sorted(spans, key=lambda span: span[1])


def build(monkeypatch: pytest.MonkeyPatch, recorder: Recorder, *args: str) -> int:
    monkeypatch.setattr(progress, "make_display", lambda quiet, verbose: recorder)
    return main(["build", *args])


def assert_one_at_a_time(spans: list[tuple[str, float, float]]) -> None:
    for (cell, _, end), (after, start, _) in itertools.pairwise(spans):
        assert end <= start, f"{after} started while {cell} was building"


def lock_of(project: Path) -> Lock:
    lock = read_lock(project / "rtx-matrix.lock")
    assert lock is not None
    return lock


def test_two_big_cells_over_the_budget_build_one_at_a_time(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    manifest = write_manifest(project, big="default, sm86")
    need = estimate_peak(BIG)
    recorder = Recorder()
    budget = str(int(need * 1.5))  # room for one, not two; a plain byte count
    assert build(monkeypatch, recorder, "-j2", "--memory", budget, str(manifest)) == 0
    spans = recorder.spans()
    assert [cell for cell, _, _ in spans] == ["big@default", "big@sm86"]
    assert_one_at_a_time(spans)
    assert "warning" not in capsys.readouterr().err
    for cell, entry in lock_of(project).engines.items():
        # Measured: ~960 MiB, about 3 times the weights and the library's own ~180 MiB.
        assert entry.peak_rss_bytes is not None, cell
        assert 2.5 * BIG < entry.peak_rss_bytes < need * 1.2, cell


def test_a_cell_over_the_budget_builds_alone_with_a_warning(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    manifest = write_manifest(project, big="default", small="sm86")
    recorder = Recorder()
    assert build(monkeypatch, recorder, "-j2", "--memory", "600MiB", str(manifest)) == 0
    assert capsys.readouterr().err == (
        f"warning: big@default needs about {memory_text(estimate_peak(BIG))} of memory, more "
        "than the budget of 600 MiB: it builds alone\n"
    )
    spans = recorder.spans()
    assert sorted(cell for cell, _, _ in spans) == ["big@default", "small@sm86"]
    assert_one_at_a_time(spans)
    engines = lock_of(project).engines
    small, big = engines["small@sm86"].peak_rss_bytes, engines["big@default"].peak_rss_bytes
    assert small is not None and big is not None and small < 400 * MiB < 2.5 * BIG < big


class OomKiller:
    """Plays the kernel's OOM killer on `cell`: counts one more OOM kill in the events file
    the run reads (RTX_MATRIX_OOM_EVENTS), then SIGKILLs the worker building it; `times`
    times at most."""

    def __init__(self, events: Path, cell: str, times: int) -> None:
        self.events, self.cell, self.times = events, cell, times
        self.kills = 0
        events.write_text("oom_kill 0\n")

    def __call__(self, event: ProgressEvent) -> None:
        if event.cell_id == self.cell and self.kills < self.times:
            self.kills += 1
            self.events.write_text(f"oom_kill {self.kills}\n")
            os.kill(event.pid, signal.SIGKILL)


def oom_run(
    project: Path, monkeypatch: pytest.MonkeyPatch, times: int, *args: str
) -> tuple[int, Recorder, str]:
    manifest = write_manifest(project, slow="sm86", small="sm86, sm89")
    killer = OomKiller(project / "memory.events", "slow@sm86", times)
    monkeypatch.setenv(OOM_EVENTS_ENV, str(killer.events))
    recorder = Recorder(on_start=killer)
    code = build(monkeypatch, recorder, "-j2", "-q", *args, str(manifest))
    assert killer.kills == times
    need = estimate_peak(os.path.getsize(project / "models" / "slow.onnx"))
    return code, recorder, f"killed: out of memory (this build needed about {memory_text(need)})"


def test_a_worker_killed_out_of_memory_is_retried_once_alone(
    project: Path, monkeypatch: pytest.MonkeyPatch, local_pool_kind: str
) -> None:
    code, recorder, _ = oom_run(project, monkeypatch, times=1)
    assert code == 0
    retried = [at for at, cell, kind in recorder.events if kind == "retry"]
    assert len(retried) == 1
    spans = recorder.spans()
    assert [cell for cell, _, _ in spans].count("slow@sm86") == 2
    retry = next(span for span in spans if span[0] == "slow@sm86" and span[1] > retried[0])
    for cell, start, end in spans:  # nothing builds beside the retry
        if (cell, start, end) != retry:
            assert end <= retry[1] or start >= retry[2], f"{cell} built beside the retry"
    lock = lock_of(project)
    assert sorted(lock.engines) == ["slow@sm86", "small@sm86", "small@sm89"]
    for entry in lock.engines.values():
        assert os.path.getsize(project / entry.path) == entry.size


def test_a_cell_out_of_memory_twice_fails_and_the_lock_stays_true(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, _, message = oom_run(project, monkeypatch, 2, "--keep-going")
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED slow@sm86 after " in err and f": {message}" in err
    lock = lock_of(project)
    assert sorted(lock.engines) == ["small@sm86", "small@sm89"]
    assert not list((project / "engines").rglob("*.tmp-*"))
    assert not (project / "engines" / "slow" / "slow@sm86.engine").exists()
