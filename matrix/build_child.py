"""The build worker process and the frames it speaks, shared by local workers and Dask.

A worker is a plain `python -c` child that imports the library first thing, then builds
requests read from its stdin until stdin closes. Events and each cell's result go back on
its original stdout; fd 1 itself is pointed at stderr, so nothing the library prints can
corrupt a frame. A frame is a 4-byte big-endian length and a pickle of
`("event", ProgressEvent)` or `("result", BuildResult)`; both travel on one stream, so a
cell's `end` event always arrives before its result.

Why not `multiprocessing` (or pebble on top of it): a spawned worker first re-imports
`multiprocessing` and pebble (~85 ms here) and the parent must import them before it can
start one. A plain child starts straight into the library import, which is what every run
waits for before its first build (bench/bench_overhead.py).

Importing this module is cheap: the library is imported only inside the child.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from matrix.engine_header import temp_files
from matrix.jobs import BuildRequest, BuildResult, ProgressEvent

STEP_INTERVAL = 0.1
"""A child forwards at most one `step` event per phase this often: the display needs no
more, and a small build emits a few hundred steps."""

_HEADER = struct.Struct("!I")
_PARENT_PID = "RTX_MATRIX_PARENT_PID"
# Ctrl-C is the parent's business: it kills its workers itself. Ignored before anything is
# imported, so a Ctrl-C while a worker starts up prints no traceback.
_CHILD_CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from matrix.build_child import main; main()"
)


def spawn(env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one worker; `env` is added to this process's environment for it."""
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {}), _PARENT_PID: str(os.getpid())},
    )


# --- frames --------------------------------------------------------------------------------


def write_frame(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next value from a blocking stream, or None at its end (the other side is gone)."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(stream, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class FrameBuffer:
    """Reassembles frames from whatever chunks a non-blocking read returned."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        self._data += chunk
        values = []
        while len(self._data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._data)
            end = _HEADER.size + size
            if len(self._data) < end:
                break
            values.append(pickle.loads(self._data[_HEADER.size : end]))
            del self._data[:end]
        return values


# --- when a cell fails outside the builder -------------------------------------------------


def death(exitcode: int) -> str:
    """One summary line for a worker that ended mid-cell."""
    if exitcode < 0:
        try:
            return f"worker died: signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"worker died: signal {-exitcode}"
    return f"worker died: exit code {exitcode}"


def describe_error(error: BaseException) -> str:
    return " ".join(f"worker error: {type(error).__name__}: {error}".split())


def failed(request: BuildRequest, started: float, error: str) -> BuildResult:
    """The result of a cell whose build never finished: its log says why, and any temporary
    engine a killed worker left behind is removed (call only once the worker is gone)."""
    _append_to_log(request.log_path, f"rtx-matrix: {error}")
    remove_temp_files(request)
    return BuildResult(request.cell_id, ok=False, seconds=time.monotonic() - started, error=error)


def remove_temp_files(request: BuildRequest) -> None:
    for path in temp_files(request.engine_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _append_to_log(log_path: str, line: str) -> None:
    with contextlib.suppress(OSError):
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


# --- in the child process ------------------------------------------------------------------


def main() -> None:
    """Build requests read from stdin until it closes (the parent is gone or done)."""
    _die_with_parent()
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        from matrix.builder import build
    except Exception as error:  # every cell then says why, not a crash loop
        broken: BaseException | None = error
    else:
        broken = None
    while (request := read_frame(sys.stdin.buffer)) is not None:
        started = time.monotonic()
        try:
            if broken is not None:
                raise broken
            result = build(request, _StepThinner(frames).send)
        except Exception as error:  # this cell's failure, not the worker's
            result = failed(request, started, describe_error(error))
        write_frame(frames, ("result", result))


def _die_with_parent() -> None:
    """On Linux, die with the parent rather than build on as an orphan after it is killed.

    Without this, a worker of a killed parent would finish its build unseen before it noticed
    its closed stdin. (The kernel ties this to the thread that started us; should that thread
    end first, an idle worker dies and its pool starts a fresh one when it needs one.)
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = os.environ.get(_PARENT_PID)
    if parent is not None and os.getppid() != int(parent):
        os._exit(0)  # the parent died before we asked to die with it


class _StepThinner:
    def __init__(self, frames: IO[bytes]) -> None:
        self.frames = frames
        self.last_step: dict[str, float] = {}

    def send(self, event: ProgressEvent) -> None:
        if event.kind == "step":
            now = time.monotonic()
            if now - self.last_step.get(event.phase, 0.0) < STEP_INTERVAL:
                return
            self.last_step[event.phase] = now
        write_frame(self.frames, ("event", event))
