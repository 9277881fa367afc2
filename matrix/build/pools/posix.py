"""The fast local pool on Linux and macOS: reusable worker processes, one build each at a time.

Each worker is a `matrix.build.worker` process started with posix_spawn
(`matrix.build.pools.posix_child`): it starts straight into the library import, and a cell
handed to it before it is ready waits in its stdin. The parent never imports `tensorrt_rtx`.

Isolation: a worker that crashes, aborts, is killed or runs past the timeout fails only its
own cell ("worker died: signal 6 (SIGABRT)", "timed out after 30 s"); the pool starts a new
worker when it next has a cell to hand out, and the other cells go on.

Threading: the pool has no threads. `results()` waits on the workers' pipes (one selector)
in the caller's thread and calls `on_event` from there. `submit` and `shutdown` may be called
from other threads. `matrix.build.pools.portable` does the same with a thread per worker.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from matrix.build.frames import FrameBuffer, write_frame
from matrix.build.messages import BuildRequest, BuildResult
from matrix.build.oom import oom_kills
from matrix.build.pools import EventCallback, ignore
from matrix.build.pools import posix_child as spawn
from matrix.build.pools.in_flight import InFlight, expire, lost, take_frame, until_next_timeout
from matrix.build.temp_files import remove_temp_files

_READ_SIZE = 1 << 16


@dataclass
class _Worker:
    proc: spawn.Child
    frames: FrameBuffer = field(default_factory=FrameBuffer)
    cell: InFlight | None = None

    @property
    def output(self) -> int:
        return self.proc.replies


class WorkerPool:
    """`jobs` worker processes; `timeout` seconds per build (None: no limit).

    `env` is set in each worker's environment, e.g. CUDA_VISIBLE_DEVICES for a pool bound to
    one GPU. `started`: workers already running (at most `jobs`), started with the same `env`.
    """

    def __init__(
        self,
        jobs: int,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        started: Sequence[spawn.Child] = (),
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        if len(started) > jobs:
            raise ValueError(f"{len(started)} workers started for a pool of {jobs}")
        self.jobs = jobs
        self.timeout = timeout
        self.env = dict(env or {})
        self._started = list(started)
        self._workers: list[_Worker] = []
        self._pending: deque[BuildRequest] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._iterating = 0
        self._selector: selectors.BaseSelector | None = None
        self._wake_read = self._wake_write = -1

    def __enter__(self) -> WorkerPool:
        # Every worker starts now: their start-up overlaps the caller's own work.
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        try:
            with self._lock:
                while self._started:
                    self._add(self._started.pop())
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
            if self._selector is None:
                raise RuntimeError("use WorkerPool as a context manager")
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
        with self._lock:
            self._iterating += 1
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                    self._hand_out()
                    busy = [w.cell for w in self._workers if w.cell is not None]
                    if not busy:
                        return
                    selector = self._selector
                    assert selector is not None
                try:
                    ready = selector.select(until_next_timeout(busy, self.timeout))
                except (OSError, ValueError):
                    if self._closed:
                        return
                    raise
                for key, _ in ready:
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_read, _READ_SIZE)
                    else:
                        yield from self._read(key.data, emit)
                yield from self._expire()
        except BaseException:
            self.shutdown()
            raise
        finally:
            with self._lock:
                self._iterating -= 1
                last_out = self._closed and not self._iterating
            if last_out:
                self._close_selector()

    def shutdown(self) -> None:
        """Kill every worker, clean up after cells in flight. Safe to call twice, and from
        another thread than the one iterating `results`."""
        with self._lock:
            self._closed = True
            unadopted = [_Worker(child) for child in self._started]
            workers, self._workers, self._started = [*self._workers, *unadopted], [], []
            self._pending.clear()
            iterating = self._iterating
        for worker in workers:
            worker.proc.kill()  # all first, so they die side by side
        for worker in workers:
            worker.proc.end()
            if worker.cell is not None:  # only now: a live worker could still write it
                remove_temp_files(worker.cell.request)
        if iterating:
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"!")  # its thread closes the selector
        else:
            self._close_selector()

    # --- internals ------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        return self._add(spawn.Child(self.env))

    def _add(self, child: spawn.Child) -> _Worker:
        assert self._selector is not None
        worker = _Worker(child)
        self._selector.register(worker.output, selectors.EVENT_READ, worker)
        self._workers.append(worker)
        return worker

    def _hand_out(self) -> None:
        """Give each idle worker a cell (holding the lock). Workers lost earlier are
        replaced only now, when there is a cell for them."""
        if self._closed:
            return
        while self._pending:
            worker = next((w for w in self._workers if w.cell is None), None)
            if worker is None:
                if len(self._workers) >= self.jobs:
                    return
                worker = self._start_worker()
            request = self._pending.popleft()
            kills = oom_kills()
            if not _send(worker, request):
                # Lost while idle: a fresh worker takes the cell. Should that one be gone
                # too, its end of stream fails the cell with its exit code.
                self._forget(worker)
                worker.proc.end()
                worker = self._start_worker()
                _send(worker, request)
            worker.cell = InFlight(request, time.monotonic(), kills)

    def _forget(self, worker: _Worker) -> None:
        """Holding the lock: no more cells or reads for this worker."""
        if worker in self._workers:
            self._workers.remove(worker)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.output)

    def _read(self, worker: _Worker, emit: EventCallback) -> Iterator[BuildResult]:
        try:
            chunk = os.read(worker.output, _READ_SIZE)
        except (OSError, ValueError):
            chunk = b""
        if self._closed:
            return
        if not chunk:
            yield from lost(worker, self._retire(worker))
            return
        for kind, payload in worker.frames.feed(chunk):
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
            self._forget(worker)
        return worker.proc.end()

    def _close_selector(self) -> None:
        with self._lock:
            selector, self._selector = self._selector, None
            fds = (self._wake_read, self._wake_write)
            self._wake_read = self._wake_write = -1
        if selector is not None:
            selector.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _send(worker: _Worker, request: BuildRequest) -> bool:
    try:
        write_frame(worker.proc.requests, request)
    except OSError:
        return False
    return True

