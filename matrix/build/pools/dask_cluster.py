"""Build cells on a Dask distributed cluster: `build --executor dask --scheduler ADDRESS`.

Same `Pool` protocol as the local pools (context manager, `submit`, `results`, `shutdown`),
so the executor, progress display and lockfile are the same as local runs.

- Isolation: each Dask worker builds in a child process of its own (one per worker thread,
  reused across cells): the same `matrix.build.worker` process local runs use, in a portable
  pool of one (`matrix.build.pools.portable`), so Dask workers run on Windows too. A crash,
  abort or timeout kills only that child: the cell fails, the Dask worker lives on and starts
  a fresh child for its next cell.
- Routing: GPU-needing cells (`use_gpu` or `weightless`) ask for the `GPU` resource, so they
  run only on workers started with `--resources GPU=1`. A cell no worker of the cluster can
  run fails at once instead of waiting forever.
- Memory: when the workers advertise a `MEMORY` resource (bytes: `--resources
  MEMORY=48e9`), each cell asks for its expected peak (`matrix.build.memory`), so a worker
  never starts more builds than its memory holds. A cell that needs more than the largest
  worker has asks for all of it: it builds alone there, with a warning. (`build --memory`
  is the local budget; a cluster's is its workers'.)
- Output: when the workers see the output folder (a probe file written here and read there),
  they write engines and logs in place; otherwise they send the bytes back and the client
  writes them, atomically. Only the client writes the lock (the executor does that).
- Progress: workers publish ProgressEvents on a per-run Dask event topic; `results` delivers
  them to `on_event` from the caller's thread, always before the cell's result.

Needs the optional extra: `pip install 'rtx-matrix[dask]'`.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from matrix.atomic import write_atomic
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.build.messages import one_line as _one_line
from matrix.build.pools import EventCallback, ignore
from matrix.errors import UsageError

if TYPE_CHECKING:
    from distributed import Client

    from matrix.build.pools.portable import PortablePool

GPU_RESOURCE = "GPU"
MEMORY_RESOURCE = "MEMORY"
NO_GPU_WORKER = (
    "no Dask worker advertises the GPU resource this cell needs "
    "(start one with `dask worker SCHEDULER --resources GPU=1`)"
)
NO_WORKER = "the Dask cluster has no workers"
_WAIT_FOR_WORKERS = 10.0
"""Seconds a new run waits for a cluster with no workers yet (one still starting up)."""
_POLL_SECONDS = 0.1


def needs_gpu(request: BuildRequest) -> bool:
    return request.use_gpu or request.weightless


@dataclass(frozen=True)
class CellOutcome:
    """What a Dask task returns: the result, which worker ran it, and when the output folder
    is not shared, the engine and log bytes for the client to write."""

    result: BuildResult
    worker: str
    engine: bytes | None = None
    log: str | None = None


@dataclass
class _Submitted:
    request: BuildRequest
    future: Any
    """A `distributed.Future` (its typing is partial: handled as Any)."""


class DaskBackend:
    """Builds on the cluster at `scheduler` (an address, or a connected `Client` to reuse).

    `timeout`: seconds per build, counted on the worker from the build's start (None: no
    limit). `shared_output`: whether workers write the output folder themselves; None probes.
    """

    def __init__(self, scheduler: str | Client, timeout: float | None,
                 shared_output: bool | None = None) -> None:
        self.timeout = timeout
        self.shared_output = shared_output
        self._client, self._owns_client = _connect(scheduler)
        self._topic = f"rtx-matrix-progress-{uuid.uuid4().hex}"
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._client.subscribe_topic(self._topic, self._on_topic)
        self._submitted: dict[str, _Submitted] = {}
        self._ready: list[BuildResult] = []
        self._started: set[str] = set()
        self._end_seen: set[str] = set()
        self._finished: set[str] = set()
        self._shared_by_folder: dict[str, bool] = {}
        self._resources: list[dict[str, float]] | None = None
        self._jobs: int | None = None
        self.ran_on: dict[str, str] = {}
        """Cell id -> address of the Dask worker that built it."""

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def jobs(self) -> int:
        """How many cells to keep in flight (`Pool.jobs`): two per worker thread, so a
        worker has its next cell at hand while the client hears of the last one."""
        if self._jobs is None:
            workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
            self._jobs = max(1, 2 * sum(int(w.get("nthreads", 1)) for w in workers.values()))
        return self._jobs

    def shutdown(self) -> None:
        """`Pool.shutdown`'s name for `close`."""
        self.close()

    def close(self) -> None:
        """Cancel what is still queued and let go of the cluster. Safe to call twice."""
        # May run on another thread than `results` (the executor's shutdown): take a copy.
        outstanding = tuple(self._submitted.values())
        self._submitted.clear()
        if outstanding:
            self._client.cancel([s.future for s in outstanding])
        with contextlib.suppress(Exception):
            self._client.unsubscribe_topic(self._topic)
        if self._owns_client:
            self._client.close()
            self._owns_client = False

    # --- the Pool protocol ----------------------------------------------------------------

    def submit(self, request: BuildRequest) -> None:
        """Send one cell to the cluster; a cell it cannot run fails at once (see `results`)."""
        reason = _why_unrunnable(request, self._worker_resources())
        if reason is not None:
            self._ready.append(BuildResult(request.cell_id, ok=False, seconds=0.0, error=reason))
            return
        shared = self._is_shared(Path(request.engine_path).parent)
        key = f"rtx-matrix-{request.cell_id}-{uuid.uuid4().hex[:8]}"
        resources = _resources(request, self._worker_resources())
        asked = resources.get(MEMORY_RESOURCE)
        if asked is not None and asked < request.expected_peak_bytes:
            from matrix.build.memory import oversized_warning

            print(oversized_warning(request.cell_id, request.expected_peak_bytes,
                                    int(asked),
                                    "the largest Dask worker's MEMORY"), file=sys.stderr)
        future = self._client.submit(
            run_cell, request, self.timeout, shared, self._topic, key=key,
            resources=resources or None, pure=False,
        )
        self._submitted[key] = _Submitted(request, future)
        future.add_done_callback(lambda _: self._inbox.put(("done", key)))

    def results(self, on_event: EventCallback | None = None) -> Iterator[BuildResult]:
        """Yield each result as it finishes until every submitted cell has one."""
        emit = on_event or ignore
        while self._ready or self._submitted:
            while self._ready:
                yield self._ready.pop(0)
            if not self._submitted:
                return
            try:
                kind, payload = self._inbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "event":
                self._deliver(payload, emit)
            elif payload in self._submitted:
                yield self._finish(self._submitted.pop(payload), emit)

    # --- client side internals ------------------------------------------------------------

    def _on_topic(self, event: tuple[float, Any]) -> None:
        # Called on the client's event loop thread: hand over to the caller's thread.
        self._inbox.put(("event", event[1]))

    def _deliver(self, message: dict[str, Any], emit: EventCallback) -> None:
        event = ProgressEvent(**{k: v for k, v in message.items() if k != "worker"})
        if event.cell_id in self._finished:
            return  # a late event of a cell whose result was already given
        if event.kind == "start":
            self._started.add(event.cell_id)
        elif event.kind == "end":
            self._end_seen.add(event.cell_id)
        emit(event)

    def _finish(self, submitted: _Submitted, emit: EventCallback) -> BuildResult:
        request = submitted.request
        self._drain_events(emit)
        try:
            outcome: CellOutcome = submitted.future.result()
        except Exception as error:  # the task's failure (e.g. KilledWorker) is this cell's only
            result = BuildResult(request.cell_id, ok=False, seconds=0.0,
                                 error=_one_line(f"Dask task failed: {type(error).__name__}: "
                                                 f"{error}"))
        else:
            self.ran_on[request.cell_id] = outcome.worker
            result = _write_back(request, outcome)
        if request.cell_id in self._started and request.cell_id not in self._end_seen:
            emit(ProgressEvent(cell_id=request.cell_id, kind="end"))  # its worker died
        self._finished.add(request.cell_id)
        return result

    def _drain_events(self, emit: EventCallback) -> None:
        # Events the scheduler relayed before this result; keep results waiting in the inbox.
        held = []
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "event":
                self._deliver(payload, emit)
            else:
                held.append((kind, payload))
        for item in held:
            self._inbox.put(item)

    def _worker_resources(self) -> list[dict[str, float]]:
        if self._resources is None:
            workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
            if not workers:
                with contextlib.suppress(Exception):
                    self._client.wait_for_workers(1, timeout=_WAIT_FOR_WORKERS)
                workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
            self._resources = [dict(w.get("resources") or {}) for w in workers.values()]
        return self._resources

    def _is_shared(self, folder: Path) -> bool:
        if self.shared_output is not None:
            return self.shared_output
        key = str(folder)
        if key not in self._shared_by_folder:
            self._shared_by_folder[key] = _probe_shared(self._client, folder)
        return self._shared_by_folder[key]


def _connect(scheduler: str | Client) -> tuple[Any, bool]:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--executor dask needs the dask extra: "
                         "pip install 'rtx-matrix[dask]'") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(scheduler, timeout="10s"), True  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as error:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: "
                         f"{_one_line(str(error))}") from None


def _resources(request: BuildRequest, workers: list[dict[str, float]]) -> dict[str, float]:
    """What the cell asks of a worker: the GPU if it needs one, and its expected peak memory
    when the workers count theirs (capped at the largest, where it then builds alone)."""
    asked: dict[str, float] = {GPU_RESOURCE: 1} if needs_gpu(request) else {}
    able = [w for w in workers if w.get(GPU_RESOURCE, 0) >= asked.get(GPU_RESOURCE, 0)]
    largest = max((w.get(MEMORY_RESOURCE, 0) for w in able), default=0)
    if largest > 0 and request.expected_peak_bytes > 0:
        asked[MEMORY_RESOURCE] = min(float(request.expected_peak_bytes), largest)
    return asked


def _why_unrunnable(request: BuildRequest, resources: list[dict[str, float]]) -> str | None:
    if not resources:
        return NO_WORKER
    if needs_gpu(request) and not any(r.get(GPU_RESOURCE, 0) >= 1 for r in resources):
        return NO_GPU_WORKER
    return None


def _probe_shared(client: Any, folder: Path) -> bool:
    """Whether every worker reads, at the same path, a file written here just now."""
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f".rtx-matrix-probe-{token}"
    probe.write_text(token, encoding="utf-8")
    try:
        answers = client.run(_read_probe, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    return bool(answers) and all(answers.values())


def _read_probe(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


def _write_back(request: BuildRequest, outcome: CellOutcome) -> BuildResult:
    """Write what a worker without the shared folder sent back, atomically."""
    result = outcome.result
    try:
        if outcome.log is not None:
            write_atomic(Path(request.log_path), outcome.log.encode("utf-8"))
        if result.ok and outcome.engine is not None:
            if hashlib.sha256(outcome.engine).hexdigest() != result.sha256:
                return replace(result, ok=False, sha256=None, size=None, header_mask=None,
                               error="engine bytes from the Dask worker do not match their "
                                     "sha256 (damaged in transfer)")
            write_atomic(Path(request.engine_path), outcome.engine)
    except OSError as error:
        return replace(result, ok=False, error=_one_line(f"cannot write the engine: {error}"))
    return result


# --- on a Dask worker ---------------------------------------------------------------------


def run_cell(request: BuildRequest, timeout: float | None, shared: bool,
             topic: str) -> CellOutcome:
    """The Dask task: build one cell in this worker's child process."""
    from distributed import get_worker

    worker = get_worker()

    def publish(event: dict[str, Any]) -> None:
        worker.log_event(topic, {**event, "worker": worker.address})

    if shared:
        return CellOutcome(_CHILDREN.build(request, timeout, publish), worker.address)
    with tempfile.TemporaryDirectory(prefix="rtx-matrix-") as scratch:
        local = replace(request,
                        engine_path=str(Path(scratch) / Path(request.engine_path).name),
                        log_path=str(Path(scratch) / Path(request.log_path).name))
        result = _CHILDREN.build(local, timeout, publish)
        engine = Path(local.engine_path).read_bytes() if result.ok else None
        log = _read_text(local.log_path)
    return CellOutcome(result, worker.address, engine, log)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class _Children:
    """This Dask worker's idle build children: a portable pool of one per thread that has
    built so far, each kept for the next cell. A child that dies, or whose time runs out,
    fails only its cell; its pool starts a fresh one for the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[PortablePool] = []

    def build(self, request: BuildRequest, timeout: float | None,
              publish: Callable[[dict[str, Any]], None]) -> BuildResult:
        from matrix.build.pools.portable import PortablePool

        with self._lock:
            pool = self._idle.pop() if self._idle else None
        if pool is None:
            pool = PortablePool(1).__enter__()
        pool.timeout = timeout
        pool.submit(request)
        # Any exception here (Ctrl-C included) shuts the pool: it is not kept.
        (result,) = pool.results(lambda event: publish(asdict(event)))
        with self._lock:
            self._idle.append(pool)
        return result


_CHILDREN = _Children()
