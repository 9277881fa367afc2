"""The frames between a worker and its parent (no library, no process)."""

from __future__ import annotations

import io
import os

from matrix.build.frames import FrameBuffer, read_frame, write_frame
from matrix.build.messages import BuildResult, ProgressEvent


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
