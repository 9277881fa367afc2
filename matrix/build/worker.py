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
waits for before its first build (bench/bench_overhead.py). It is started with
`os.posix_spawn`, not `subprocess`, whose import alone takes ~10 ms: `build` starts its
first worker before parsing its arguments (`matrix.cli.head_start`).

Importing this module is cheap: the library is imported only inside the child.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent

STEP_INTERVAL = 0.1
"""A child forwards at most one `step` event per phase this often, and as many `write`
events (the last always): the display needs no more, and a small build emits a few hundred
steps."""

_HEADER = struct.Struct("!I")
_PARENT_PID = "RTX_MATRIX_PARENT_PID"
# Ctrl-C is the parent's business: it kills its workers itself. Ignored before anything is
# imported, so a Ctrl-C while a worker starts up prints no traceback.
_CHILD_CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from matrix.build.worker import main; main()"
)


class Child:
    """A running worker: requests go to its stdin, frames come from its stdout."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """Start one worker; `env` is added to this process's environment for it."""
        request_in, request_out = os.pipe()  # both non-inheritable: only the dup2 copies are
        reply_in, reply_out = os.pipe()
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-c", _CHILD_CODE],
                {**os.environ, **(env or {}), _PARENT_PID: str(os.getpid())},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, request_in, 0),
                    (os.POSIX_SPAWN_DUP2, reply_out, 1),
                ],
            )
        except BaseException:
            for fd in (request_out, reply_in):
                os.close(fd)
            raise
        finally:
            os.close(request_in)
            os.close(reply_out)
        self.requests: IO[bytes] = os.fdopen(request_out, "wb")
        self.replies = reply_in
        """The read end of its frames, for `os.read` or `os.fdopen`."""
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        """Its exit code once it ended (minus the signal that killed it), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def end(self) -> int:
        """Kill it (if still alive), reap it and close its pipes; its exit code."""
        self.kill()
        code = self.wait()
        self.close()
        return code

    def close(self) -> None:
        """Close both pipes (after `wait`: a live child then sees the end of its input)."""
        with contextlib.suppress(OSError):
            self.requests.close()
        with contextlib.suppress(OSError):
            os.close(self.replies)
        self.replies = -1


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


def died(
    request: BuildRequest, started: float, exitcode: int, oom_kills_before: int | None
) -> BuildResult:
    """The result of a cell whose worker ended mid-build (call once it is reaped): out of
    memory when the kernel's OOM killer did it (`matrix.build.oom`; `oom_kills_before`: its
    count when the cell was handed out), else the plain death."""
    from dataclasses import replace

    from matrix.build.oom import killed_by_oom

    if killed_by_oom(exitcode, oom_kills_before):
        return replace(failed(request, started, out_of_memory(request)), out_of_memory=True)
    return failed(request, started, death(exitcode))


def out_of_memory(request: BuildRequest) -> str:
    from matrix.build.memory import memory_text

    need = request.expected_peak_bytes
    return "killed: out of memory" + (
        f" (this build needed about {memory_text(need)})" if need else ""
    )


def describe_error(error: BaseException) -> str:
    return " ".join(f"worker error: {type(error).__name__}: {error}".split())


def failed(request: BuildRequest, started: float, error: str) -> BuildResult:
    """The result of a cell whose build never finished: its log says why, and any temporary
    engine a killed worker left behind is removed (call only once the worker is gone).
    The summary line also carries the last error the library logged, often the cause of an
    abort."""
    from matrix.build.library_log import last_error
    from matrix.build.messages import BuildResult

    logged = last_error(request.log_path)
    _append_to_log(request.log_path, f"rtx-matrix: {error}")
    from matrix.build.temp_files import remove_temp_files

    remove_temp_files(request)
    if logged:
        error = f"{error}; the library last logged: {logged}"
    return BuildResult(request.cell_id, ok=False, seconds=time.monotonic() - started, error=error)


def _append_to_log(log_path: str, line: str) -> None:
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


# --- in the child process ------------------------------------------------------------------


def main() -> None:
    """Build requests read from stdin until it closes (the parent is gone or done)."""
    _die_with_parent()
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        from matrix.build.builder import build
    except Exception as error:  # every cell then says why, not a crash loop
        broken: BaseException | None = error
    else:
        broken = None
    from dataclasses import replace

    from matrix.build.peak_rss import PeakMeter

    meter = PeakMeter()
    while (request := read_frame(sys.stdin.buffer)) is not None:
        started = time.monotonic()
        meter.start()
        try:
            if broken is not None:
                raise broken
            result = build(request, _StepThinner(frames).send)
        except Exception as error:  # this cell's failure, not the worker's
            result = failed(request, started, describe_error(error))
        write_frame(frames, ("result", replace(result, peak_rss_bytes=meter.peak())))


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
        if event.kind == "step" or (event.kind == "write" and event.step < event.steps):
            now = time.monotonic()
            if now - self.last_step.get(event.phase, 0.0) < STEP_INTERVAL:
                return
            self.last_step[event.phase] = now
        write_frame(self.frames, ("event", event))
