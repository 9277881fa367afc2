"""The OOM verdict: a SIGKILL while the kernel's count of OOM kills went up."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from matrix.build import oom
from matrix.build.messages import BuildRequest
from matrix.build.worker import died
from matrix.manifest.types import BuilderOptions


def test_the_kernel_count_is_read_from_proc_vmstat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(oom.OOM_EVENTS_ENV, raising=False)
    expected = None
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("oom_kill "):
            expected = int(line.split()[1])
    assert oom.oom_kills() == expected


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup-style memory.events file standing in for the kernel's count."""
    path = tmp_path / "memory.events"
    path.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    monkeypatch.setenv(oom.OOM_EVENTS_ENV, str(path))
    return path


def test_sigkill_while_the_count_went_up_is_out_of_memory(events: Path) -> None:
    before = oom.oom_kills()
    assert before == 1
    assert not oom.killed_by_oom(-signal.SIGKILL, before)
    events.write_text("oom 2\noom_kill 2\n")
    assert oom.killed_by_oom(-signal.SIGKILL, before)
    assert not oom.killed_by_oom(-signal.SIGABRT, before)
    assert not oom.killed_by_oom(-signal.SIGKILL, None)


def test_no_count_no_verdict(events: Path) -> None:
    events.unlink()
    assert oom.oom_kills() is None
    assert not oom.killed_by_oom(-signal.SIGKILL, 0)


def request(tmp_path: Path, need: int) -> BuildRequest:
    return BuildRequest(
        "m@sm86", "m.onnx", ("sm86",), False, False, BuilderOptions(), (),
        str(tmp_path / "m@sm86.engine"), str(tmp_path / "m@sm86.log"), expected_peak_bytes=need,
    )


def test_a_worker_killed_for_memory_says_how_much_its_build_needed(
    events: Path, tmp_path: Path
) -> None:
    events.write_text("oom_kill 5\n")
    result = died(request(tmp_path, 6 << 30), 0.0, -signal.SIGKILL, 4)
    assert result.out_of_memory and not result.ok
    assert result.error == "killed: out of memory (this build needed about 6.0 GiB)"
    assert (tmp_path / "m@sm86.log").read_text() == f"rtx-matrix: {result.error}\n"


def test_any_other_death_stays_what_it_was(events: Path, tmp_path: Path) -> None:
    result = died(request(tmp_path, 6 << 30), 0.0, -signal.SIGKILL, 1)
    assert not result.out_of_memory
    assert result.error == "worker died: signal 9 (SIGKILL)"
