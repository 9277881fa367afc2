"""The local pool that runs wherever Python does, Windows included: the posix pool's
behaviour with only portable calls.

Each worker is a `matrix.build.worker` process started with `subprocess`; a reader thread
per worker turns its stdout into frames and puts them, in order, on one queue. `results()`
takes them from that queue in the caller's thread and calls `on_event` from there, so a
cell's `end` event still comes before its result. Only that thread changes the pool's
state; `submit` and `shutdown` may be called from other threads.

Isolation is the posix pool's: a worker that crashes, is killed or runs past the timeout
fails only its own cell, with the same messages, and is replaced when the pool next has a
cell to hand out. On Windows each worker joins a kill-on-close Job Object
(`matrix.build.pools.windows_job`), so it dies with this process; on Linux the worker asks
the kernel for that itself (`matrix.build.worker`). It is the default pool on Windows;
`RTX_MATRIX_WORKERS=portable` picks it elsewhere.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from matrix.build.frames import read_frame, write_frame
from matrix.build.messages import BuildRequest, BuildResult
from matrix.build.oom import oom_kills
from matrix.build.pools import EventCallback, ignore
from matrix.build.pools.in_flight import InFlight, expire, lost, take_frame, until_next_timeout
from matrix.build.temp_files import remove_temp_files
from matrix.build.worker import command, environment

_JOIN_SECONDS = 5.0
"""How long to wait for a reader once its worker is dead (its output then ends at once)."""

Heard = tuple["_Worker | None", Any]
"""(worker, frame) from a reader; frame None: that worker's output ended. (None, None):
wake up, the pool was shut."""


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    reader: threading.Thread | None = None
    cell: InFlight | None = None

    @property
    def requests(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin


class PortablePool:
    """`jobs` worker processes; `timeout` seconds per build (None: no limit).

    `env` is set in each worker's environment, e.g. CUDA_VISIBLE_DEVICES for a pool bound to
    one GPU.
    """

    def __init__(
        self, jobs: int, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.jobs = jobs
        self.timeout = timeout
        self.env = dict(env or {})
        self._workers: list[_Worker] = []
        self._pending: deque[BuildRequest] = deque()
        self._inbox: queue.SimpleQueue[Heard] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._entered = False
        self._closed = False

    def __enter__(self) -> PortablePool:
        # Every worker starts now: their start-up overlaps the caller's own work.
        try:
            with self._lock:
                self._entered = True
                while len(self._workers) < self.jobs:
                    self._start_worker()
        except BaseException:  # e.g. no process could be started: none is left behind
            self.shutdown()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def submit(self, request: BuildRequest) -> None:
        """Queue one cell; it goes to a worker at once when one is free, else when one frees
        up (while `results` runs)."""
        with self._lock:
            if not self._entered:
                raise RuntimeError("use PortablePool as a context manager")
            self._pending.append(request)
            self._hand_out()

    def results(self, on_event: EventCallback | None = None) -> Iterator[BuildResult]:
        """Yield each result as it finishes until every submitted cell has one.

        `on_event` is called from this iterating thread, each cell's `end` before its result.
        Ctrl-C (or any exception) here kills every worker, removes temp files of cells in
        flight, and propagates. After `shutdown` from another thread the iteration ends,
        without results for the cells in flight.
        """
        emit = on_event or ignore
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    self._hand_out()
                    busy = [w.cell for w in self._workers if w.cell is not None]
                    if not busy:
                        return
                for worker, frame in self._wait(until_next_timeout(busy, self.timeout)):
                    if self._closed:
                        return
                    yield from self._receive(worker, frame, emit)
                yield from self._expire()
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Kill every worker, clean up after cells in flight. Safe to call twice, and from
        another thread than the one iterating `results`."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            self._pending.clear()
        for worker in workers:
            _kill(worker)  # all first, so they die side by side
        for worker in workers:
            _end(worker)
            if worker.cell is not None:  # only now: a live worker could still write it
                remove_temp_files(worker.cell.request)
        self._inbox.put((None, None))

    # --- internals ------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        proc = subprocess.Popen(
            command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment(self.env)
        )
        try:
            if sys.platform == "win32":  # pragma: no cover - cannot run here
                from matrix.build.pools.windows_job import kill_with_this_process

                # Best effort: a worker Windows refuses to tie still ends at its next read
                # of stdin once this process is gone (docs/platforms.md).
                with contextlib.suppress(OSError):
                    kill_with_this_process(proc.pid)
            worker = _Worker(proc)
            worker.reader = threading.Thread(
                target=_read, args=(worker, self._inbox), daemon=True, name="rtx-matrix-reader"
            )
            worker.reader.start()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self._workers.append(worker)
        return worker

    def _hand_out(self) -> None:
        """Give each idle worker a cell (holding the lock). Workers lost earlier are
        replaced only now, when there is a cell for them."""
        if self._closed or not self._entered:
            return
        while self._pending:
            worker = next((w for w in self._workers if w.cell is None), None)
            if worker is None:
                if len(self._workers) >= self.jobs:
                    return
                worker = self._start_worker()
            request = self._pending.popleft()
            kills = oom_kills()
            if worker.proc.poll() is not None or not _send(worker, request):
                # Lost while idle: a fresh worker takes the cell. Should that one be gone
                # too, its end of output fails the cell with its exit code.
                self._workers.remove(worker)
                _end(worker)
                worker = self._start_worker()
                _send(worker, request)
            worker.cell = InFlight(request, time.monotonic(), kills)

    def _wait(self, timeout: float | None) -> list[Heard]:
        """What the readers said, waiting up to `timeout` seconds (None: until they say
        something): everything there is, so a result already in is read before a timeout
        is judged."""
        try:
            messages = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                messages.append(self._inbox.get_nowait())
        return messages

    def _receive(
        self, worker: _Worker | None, frame: Any, emit: EventCallback
    ) -> Iterator[BuildResult]:
        if worker is None or worker not in self._workers:
            return  # a wake-up, or news from a worker already retired
        if frame is None:  # its output ended: it died
            yield from lost(worker, self._retire(worker))
            return
        kind, payload = frame
        result = take_frame(worker.cell, kind, payload, emit)
        if result is not None:
            with self._lock:
                worker.cell = None  # the caller decides whether more cells start
            yield result

    def _expire(self) -> Iterator[BuildResult]:
        return expire(self._workers, self.timeout, self._retire)

    def _retire(self, worker: _Worker) -> int:
        """Forget a worker whose output ended or whose time ran out, and end it; its exit
        code."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        return _end(worker)


def _read(worker: _Worker, inbox: queue.SimpleQueue[Heard]) -> None:
    """A reader thread: the worker's frames, in order, then None when its output ends."""
    stream = worker.proc.stdout
    assert stream is not None
    try:
        while (frame := read_frame(stream)) is not None:
            inbox.put((worker, frame))
    except Exception:  # output that is no frame: the worker is ended like a dead one
        pass
    finally:
        inbox.put((worker, None))


def _send(worker: _Worker, request: BuildRequest) -> bool:
    try:
        write_frame(worker.requests, request)
    except OSError:  # its stdin is closed: the worker is gone
        return False
    return True


def _kill(worker: _Worker) -> None:
    with contextlib.suppress(OSError):
        worker.proc.kill()


def _end(worker: _Worker) -> int:
    """Kill it (if still alive), reap it, let its reader finish and close its pipes; its
    exit code (minus the signal that killed it, on POSIX)."""
    _kill(worker)
    code = worker.proc.wait()
    with contextlib.suppress(OSError):
        worker.requests.close()
    reader = worker.reader
    if reader is not None and reader is not threading.current_thread():
        reader.join(_JOIN_SECONDS)
        if reader.is_alive():
            return code  # something else holds its output open: leave the pipe to it
    if worker.proc.stdout is not None:
        with contextlib.suppress(OSError):
            worker.proc.stdout.close()
    return code
