"""The build worker process, the same for every pool (posix, portable, Dask).

A worker is a plain `python -c` child (`command()`) that imports the library first thing,
then builds requests read from its stdin until stdin closes. Events and each cell's result
go back on its original stdout as frames (`matrix.build.frames`); fd 1 itself is pointed at
stderr, so nothing the library prints can corrupt a frame.

Why not `multiprocessing` (or pebble on top of it): a spawned worker first re-imports
`multiprocessing` and pebble (~85 ms here) and the parent must import them before it can
start one. A plain child starts straight into the library import, which is what every run
waits for before its first build (bench/bench_overhead.py).

Importing this module is cheap: the library is imported only inside the child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING

from matrix.build.frames import read_frame, write_frame

if TYPE_CHECKING:
    from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent

STEP_INTERVAL = 0.1
"""A child forwards at most one `step` event per phase this often, and as many `write`
events (the last always): the display needs no more, and a small build emits a few hundred
steps."""

_PARENT_PID = "RTX_MATRIX_PARENT_PID"
# Ctrl-C is the parent's business: it kills its workers itself. Ignored before anything is
# imported, so a Ctrl-C while a worker starts up prints no traceback.
_CHILD_CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "from matrix.build.worker import main; main()"
)


def command() -> list[str]:
    """The command line that starts a worker."""
    return [sys.executable, "-c", _CHILD_CODE]


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A worker's environment: this process's, plus `env`, plus who its parent is."""
    return {**os.environ, **(env or {}), _PARENT_PID: str(os.getpid())}


# --- when a cell fails outside the builder -------------------------------------------------


def death(exitcode: int) -> str:
    """One summary line for a worker that ended mid-cell."""
    if exitcode < 0:
        try:
            return f"worker died: signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"worker died: signal {-exitcode}"
    if exitcode >= 0xC0000000:  # Windows: the NTSTATUS of the crash, e.g. 0xC0000005
        return f"worker died: exit code {exitcode:#x}"
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
    end first, an idle worker dies and its pool starts a fresh one when it needs one.) On
    Windows the parent ties its workers to itself instead (`matrix.build.pools.windows_job`);
    docs/platforms.md says what each platform covers.
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
