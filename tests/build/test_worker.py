"""What the parent says of a cell whose worker died or timed out (no library, no process)."""

from __future__ import annotations

from pathlib import Path

from matrix.build.worker import death, describe_error, failed
from tests.factories import build_request


def test_a_dead_workers_cell_says_what_the_library_last_logged(tmp_path: Path) -> None:
    request = build_request(tmp_path, tmp_path / "m.onnx", "m")
    log = Path(request.log_path)
    log.parent.mkdir(parents=True)
    log.write_text("[11/25/2026-06:58:57] [TRT] [F] Assertion failed: tactic\n")
    temp = Path(request.engine_path).with_name(".m.engine.tmp-99999")
    temp.write_bytes(b"partial")
    result = failed(request, 0.0, death(-6))
    assert not result.ok
    assert result.error == (
        "worker died: signal 6 (SIGABRT); the library last logged: Assertion failed: tactic")
    assert log.read_text().endswith("\nrtx-matrix: worker died: signal 6 (SIGABRT)\n")
    assert not temp.exists()


def test_a_dead_workers_cell_without_a_library_error_says_only_how_it_died(
        tmp_path: Path) -> None:
    request = build_request(tmp_path, tmp_path / "m.onnx", "m")
    assert failed(request, 0.0, death(-9)).error == "worker died: signal 9 (SIGKILL)"


def test_worker_failures_read_as_one_line() -> None:
    assert death(-9) == "worker died: signal 9 (SIGKILL)"
    assert death(-11) == "worker died: signal 11 (SIGSEGV)"
    assert death(3) == "worker died: exit code 3"
    assert death(0xC0000005) == "worker died: exit code 0xc0000005"  # Windows: access violation
    assert describe_error(ValueError("bad\nthing")) == "worker error: ValueError: bad thing"
