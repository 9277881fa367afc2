"""Builds cells in reusable worker processes (pebble), one build per worker at a time.

Isolation: a worker that crashes, aborts, is killed or runs past the timeout fails only its
own cell; pebble replaces it and the other cells go on. The parent never imports
`tensorrt_rtx` (workers start with "spawn", so nothing the library set up is ever forked).

Threading: `results()` runs in the caller's thread and calls `on_event` from that same
thread. One daemon thread per pool only moves worker events from the pipe into an in-process
queue, so a worker never blocks on a full pipe. The event pipe has no lock (see `_Channel`):
a worker killed while sending cannot block the others.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import pebble
from pebble.common.types import CONSTS as PEBBLE_CONSTS

from matrix.engine_header import temp_files
from matrix.jobs import BuildRequest, BuildResult, ProgressEvent

EventCallback = Callable[[ProgressEvent], None]

START_METHOD = "spawn"
"""Measured in bench/bench_workers.py: "spawn" and "forkserver" start a worker equally fast
here, and spawn keeps the parent free of any fork-safety question."""

_POLL_SECONDS = 0.01
"""The event pump's poll: joining it at shutdown waits up to this long."""
_PEBBLE_TICK = 0.02
"""pebble's manager threads sleep in units of `CONSTS.sleep_unit` (0.1 s) and joining them
waits out a tick: 0.1 s of every run's fixed cost (bench/bench_overhead.py). Their loops
only check state on waking, so a shorter tick costs a few idle wake-ups a second."""
_LENGTH_PREFIX = 4
"""Bytes `Connection.send_bytes` puts before a message (sent in the same write when small)."""
_END_EVENT_GRACE = 1.0
"""How long a finished cell's result waits for its `end` event, so events come first."""
_STEP_INTERVAL = 0.1
"""Workers forward at most one `step` event per phase this often: the display needs no more,
and a small build emits a few hundred steps."""


@dataclass(frozen=True)
class _Channel:
    """Worker-to-parent event pipe without a lock: each event goes out in one write() of at
    most PIPE_BUF bytes, which POSIX makes atomic. So writers never interleave, and a worker
    killed mid-send cannot leave a lock held that would block the other workers forever."""

    reader: Connection
    writer: Connection

    @classmethod
    def open(cls, context: Any) -> _Channel:
        reader, writer = context.Pipe(duplex=False)
        return cls(reader, writer)

    def send(self, event: ProgressEvent) -> None:
        data = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) + _LENGTH_PREFIX > select.PIPE_BUF:
            return  # only an absurdly long cell id or phase name; progress is best effort
        self.writer.send_bytes(data)

    def receive(self) -> ProgressEvent:
        event = pickle.loads(self.reader.recv_bytes())
        assert isinstance(event, ProgressEvent)
        return event

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


@dataclass
class _InFlight:
    request: BuildRequest
    future: Future[BuildResult]
    submitted: float
    started: float | None = None
    pid: int = 0
    ended: bool = False


@dataclass
class _State:
    pending: deque[BuildRequest] = field(default_factory=deque)
    running: dict[str, _InFlight] = field(default_factory=dict)


class WorkerPool:
    """`jobs` worker processes; `timeout` seconds per build (None: no limit).

    `env` is set in each worker before it builds anything, e.g. CUDA_VISIBLE_DEVICES for a
    pool bound to one GPU.
    """

    def __init__(
        self, jobs: int, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        PEBBLE_CONSTS.sleep_unit = min(PEBBLE_CONSTS.sleep_unit, _PEBBLE_TICK)
        self.jobs = jobs
        self.timeout = timeout
        self.env = dict(env or {})
        self._state = _State()
        self._pool: pebble.ProcessPool | None = None
        self._events: _Channel | None = None
        self._local: queue.SimpleQueue[ProgressEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()

    def __enter__(self) -> WorkerPool:
        context = multiprocessing.get_context(START_METHOD)
        self._events = _Channel.open(context)
        self._pool = pebble.ProcessPool(
            max_workers=self.jobs,
            initializer=_init_worker,
            initargs=(self._events, self.env),
            context=context,
        )
        self._pump = threading.Thread(
            target=self._pump_events, name="rtx-matrix-events", daemon=True
        )
        self._pump.start()
        # pebble starts its workers on the first schedule(); a no-op task starts them now, so
        # their ~0.2 s of Python start-up and library import overlaps the caller's own work.
        self._pool.schedule(_ready)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def submit(self, request: BuildRequest) -> None:
        """Queue one cell; it starts at once when a worker is free, else when one frees up
        (also while `results` runs)."""
        with self._lock:
            self._state.pending.append(request)
        self._fill()

    def cancel_pending(self) -> tuple[BuildRequest, ...]:
        """Queued cells that have not started never start and yield no result; returned so the
        caller can report them as not started. Cells already building finish."""
        with self._lock:
            cancelled = tuple(self._state.pending)
            self._state.pending.clear()
        return cancelled

    def results(self, on_event: EventCallback | None = None) -> Iterator[BuildResult]:
        """Yield each result as it finishes until every submitted, uncancelled cell has one.

        `on_event` is called from this iterating thread. Ctrl-C (or any exception) here kills
        every worker, removes temp files of cells in flight, and propagates. After `shutdown`
        from another thread the iteration ends, without results for the cells in flight.
        """
        emit = on_event or _ignore
        try:
            while running := self._fill():
                # Woken by a worker event or a finished future, so progress shows at once.
                if not any(f.done() for f in running):
                    self._wake.wait(_POLL_SECONDS)
                self._wake.clear()
                self._deliver_events(emit)
                for future in [f for f in running if f.done()]:
                    result = self._finish(future, emit)
                    if result is not None:
                        yield result
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Kill every worker, clean up after cells in flight. Safe to call twice, and from
        another thread than the one iterating `results`."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            in_flight = list(self._state.running.values())
            self._state.running.clear()
            self._state.pending.clear()
        self._stop.set()  # the event pump winds down while pebble joins its threads
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join()
        for cell in in_flight:  # only now: a live worker could still write its temp file
            _remove_temp_files(cell.request)
        if self._pump is not None:
            self._pump.join(timeout=1.0)
            self._pump = None
        if self._events is not None:
            self._events.close()
            self._events = None

    # --- internals ------------------------------------------------------------------------

    def _fill(self) -> list[Future[BuildResult]]:
        """Hand pebble at most one cell per worker, so the rest stay cancellable here.
        Returns the futures in flight; none once everything is done or the pool is shut."""
        with self._lock:
            if self._closed:
                return []
            if self._pool is None:
                raise RuntimeError("use WorkerPool as a context manager")
            while self._state.pending and len(self._state.running) < self.jobs:
                request = self._state.pending.popleft()
                future = self._pool.schedule(
                    _build_in_worker, args=(request,), timeout=self.timeout
                )
                future.add_done_callback(lambda _: self._wake.set())
                self._state.running[request.cell_id] = _InFlight(request, future, time.monotonic())
            return [cell.future for cell in self._state.running.values()]

    def _pump_events(self) -> None:
        # poll() with a timeout, so `shutdown` can end this thread without writing to the pipe.
        events, stop = self._events, self._stop
        assert events is not None
        while not stop.is_set():
            try:
                if events.reader.poll(_POLL_SECONDS):
                    self._local.put(events.receive())
                    self._wake.set()
            except (EOFError, OSError):
                return

    def _deliver_events(self, emit: EventCallback) -> None:
        while True:
            try:
                event = self._local.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                cell = self._state.running.get(event.cell_id)
            if cell is not None:
                if event.kind == "start":
                    cell.started, cell.pid = time.monotonic(), event.pid
                elif event.kind == "end":
                    cell.ended = True
            emit(event)

    def _finish(self, future: Future[BuildResult], emit: EventCallback) -> BuildResult | None:
        with self._lock:
            cell = next((c for c in self._state.running.values() if c.future is future), None)
        if cell is None:  # shut down meanwhile
            return None
        try:
            result = future.result()
        except BaseException as error:  # the worker's failure is this cell's failure only
            result = self._failure(cell, _describe_failure(error, self.timeout))
        else:
            self._await_end_event(cell, emit)
        with self._lock:
            self._state.running.pop(cell.request.cell_id, None)
        return result

    def _await_end_event(self, cell: _InFlight, emit: EventCallback) -> None:
        # The result and the events travel on different pipes; keep "end" before the result.
        deadline = time.monotonic() + _END_EVENT_GRACE
        while not cell.ended and time.monotonic() < deadline:
            self._wake.wait(0.002)
            self._wake.clear()
            self._deliver_events(emit)

    def _failure(self, cell: _InFlight, error: str) -> BuildResult:
        _remove_temp_files(cell.request)
        _append_to_log(cell.request.log_path, f"rtx-matrix: {error}")
        began = cell.started if cell.started is not None else cell.submitted
        return BuildResult(
            cell_id=cell.request.cell_id, ok=False, seconds=time.monotonic() - began, error=error
        )


def _describe_failure(error: BaseException, timeout: float | None) -> str:
    if isinstance(error, pebble.ProcessExpired):
        return _death(error.exitcode)
    if isinstance(error, TimeoutError):
        return f"timed out after {_seconds(timeout)} s"
    return " ".join(f"worker error: {type(error).__name__}: {error}".split())


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"worker died: signal {-exitcode}"
        return f"worker died: signal {-exitcode} ({name})"
    return f"worker died: exit code {exitcode}"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _remove_temp_files(request: BuildRequest) -> None:
    for path in temp_files(request.engine_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _append_to_log(log_path: str, line: str) -> None:
    with contextlib.suppress(OSError):
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def _ignore(event: ProgressEvent) -> None:
    del event


# --- inside a worker process --------------------------------------------------------------

_worker_events: _Channel | None = None


def _init_worker(events: _Channel, env: Mapping[str, str]) -> None:
    global _worker_events
    _worker_events = events
    os.environ.update(env)
    # pebble ignores Ctrl-C in workers (the parent handles it) and turns SIGTERM into a Python
    # handler, which cannot run while the library builds: a timed-out build would live on for
    # pebble's 3 s grace. Dying at once is safe: the parent removes the cell's temp files.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Pay the library import before the first cell. A failing initializer would make pebble
    # restart the worker forever; failing in the cell instead reports the import error.
    with contextlib.suppress(Exception):
        import matrix.builder  # noqa: F401


def _ready() -> None:
    return None


def _build_in_worker(request: BuildRequest) -> BuildResult:
    from matrix.builder import build

    return build(request, _Forwarder(_worker_events).send)


class _Forwarder:
    """Sends events to the parent, thinning `step` events to one per phase per interval."""

    def __init__(self, events: _Channel | None) -> None:
        self.events = events
        self.last_step: dict[str, float] = {}

    def send(self, event: ProgressEvent) -> None:
        if self.events is None:
            return
        if event.kind == "step":
            now = time.monotonic()
            if now - self.last_step.get(event.phase, 0.0) < _STEP_INTERVAL:
                return
            self.last_step[event.phase] = now
        self.events.send(event)
