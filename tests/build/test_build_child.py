"""The frames between a worker and its parent, and a cell whose worker died (no library,
no process)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matrix.build.messages import BuildResult, ProgressEvent
from matrix.build.worker import FrameBuffer, death, failed, read_frame, write_frame
from tests.factories import build_request


def frames() -> list[object]:
    return [
        ("event", ProgressEvent(cell_id="m@sm86", kind="start", pid=os.getpid())),
        ("event", ProgressEvent(cell_id="m@sm86", kind="step", phase="Building", step=3)),
        ("result", BuildResult(cell_id="m@sm86", ok=True, seconds=0.5, sha256="ab" * 32)),
    ]


def test_frames_round_trip_through_a_stream() -> None:
    stream = io.BytesIO()
    for frame in frames():
        write_frame(stream, frame)
    stream.seek(0)
    assert [read_frame(stream) for _ in range(3)] == frames()
    assert read_frame(stream) is None  # the other side is gone


def test_a_frame_cut_short_reads_as_the_end() -> None:
    stream = io.BytesIO()
    write_frame(stream, frames()[0])
    assert read_frame(io.BytesIO(stream.getvalue()[:-1])) is None


def test_frames_reassemble_from_any_chunking() -> None:
    stream = io.BytesIO()
    for frame in frames():
        write_frame(stream, frame)
    data = stream.getvalue()
    for size in (1, 2, 3, 7, 64, len(data)):
        buffer = FrameBuffer()
        got = []
        for start in range(0, len(data), size):
            got += buffer.feed(data[start : start + size])
        assert got == frames(), size


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
