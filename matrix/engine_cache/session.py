"""One run's use of the engine cache: look stale cells up, fetch the hits into the output
folder and the lock, and push what the run builds.

`matrix.build.run` drives it for `build` and `cache pull`; `cache push` and `cache status`
use it directly. Any failure of the store is a warning and the cache is then left alone for
the rest of the run: cells it did not serve are built as if there were no cache.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from matrix.engine_cache.store import CacheUnavailable, EngineStore, Rejected, describe, is_sha256
from matrix.engine_cache.transfer import Wanted, download
from matrix.lockfile.freshness import CellState, relative_posix
from matrix.lockfile.types import Lock, LockEntry
from matrix.manifest.types import CacheSpec
from matrix.versions import installed_tensorrt_rtx

if TYPE_CHECKING:
    from matrix.build.messages import ProgressEvent
    from matrix.engine_cache.record import Record
    from matrix.gpu import Gpu
    from matrix.lockfile.book import LockBook
    from matrix.plan.types import Plan

LOOKUP_THREADS = 16
"""Lookups are one small GET each: latency, not bandwidth, so many at once."""
FETCH_THREADS = 3
PUSH_THREADS = 2
NOT_IN_CACHE = "not in the cache"

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Found:
    """A stale cell the cache can serve, and the lock entry it will have then."""

    state: CellState
    wanted: Wanted
    entry: LockEntry
    record: Record | None
    """None when the cell gets the very engine its lock entry names (no record needed)."""


@dataclass(frozen=True)
class Missing:
    state: CellState
    reason: str
    """`not in the cache`, or why the entry there cannot be used."""
    invalid: bool = False


@dataclass(frozen=True)
class Fetched:
    cell_id: str
    entry: LockEntry
    engine: Path
    seconds: float


@dataclass
class PushReport:
    pushed: int = 0
    present: int = 0
    """Engines the cache had already (the same bytes)."""
    bytes: int = 0
    failed: list[str] = field(default_factory=list)


def open_session(spec: CacheSpec, warn: Warn) -> CacheSession | None:
    """The cache, or None after a warning when it cannot be used."""
    try:
        return CacheSession(EngineStore(spec), warn)
    except CacheUnavailable as error:
        warn(f"{error}; going on without the cache")
        return None


class CacheSession:
    def __init__(self, store: EngineStore, warn: Warn) -> None:
        self.store = store
        self.warn = warn
        self.broken = False
        self.failure = ""
        """The store failure that made it `broken`."""
        self.installed = installed_tensorrt_rtx()
        self._lock = threading.Lock()

    @property
    def push(self) -> bool:
        return self.store.spec.push and not self.broken

    def give_up(self, error: CacheUnavailable) -> None:
        """The first store failure is a warning; the cache is not asked again this run."""
        with self._lock:
            if not self.broken:
                self.broken = True
                self.failure = str(error)
                self.warn(f"{error}; going on without the cache")

    # ------------------------------------------------------------------------------ lookup

    def lookup(
        self,
        plan: Plan,
        states: Sequence[CellState],
        lock: Lock | None,
        lock_dir: Path,
        check_engines: bool = False,
        gpu: Gpu | None = None,
        trust_lock: bool = False,
    ) -> list[Found | Missing]:
        """What the cache holds for each of `states`, in order. `check_engines` also asks
        the store whether each named engine is there with its size (`cache status`). `gpu`:
        this host's, which `current` cells' engines must have been built on (freshness
        rebuilds them for another GPU, even of the same CC). `trust_lock` (a fetch): a cell
        whose lock entry is for its very key is found without asking the store, which is
        asked for that engine by the download itself: a fresh clone of a repository with a
        committed lock costs one request per engine, not two."""

        def one(state: CellState) -> Found | Missing:
            if self.broken:
                return Missing(state, "the cache is unavailable")
            try:
                return self._lookup(plan, state, lock, lock_dir, check_engines, gpu,
                                    trust_lock)
            except CacheUnavailable as error:
                self.give_up(error)
                return Missing(state, "the cache is unavailable")

        if len(states) <= 1:
            return [one(state) for state in states]
        with concurrent.futures.ThreadPoolExecutor(min(LOOKUP_THREADS, len(states))) as pool:
            return list(pool.map(one, states))

    def _lookup(
        self,
        plan: Plan,
        state: CellState,
        lock: Lock | None,
        lock_dir: Path,
        check_engines: bool,
        gpu: Gpu | None,
        trust_lock: bool,
    ) -> Found | Missing:
        from matrix.plan.planner import expected_mask

        key = state.fingerprint
        if key is None:
            return Missing(state, "its key needs the GPU it was built for")
        wanted_gpu = gpu.name if gpu is not None and state.cell.target.current else None
        locked = lock.engines.get(state.cell.id) if lock else None
        if locked is not None and (locked.fingerprint != key or
                                   wanted_gpu not in (None, locked.gpu)):
            locked = None
        mask = expected_mask(state.cell)
        if trust_lock and locked is not None:
            wanted = self._wanted(locked.sha256, locked.size, mask, locked.header_mask)
            return Found(state, wanted, locked, None)
        record, problem = self._record(key, mask)
        invalid = problem is not None
        if record is not None and wanted_gpu not in (None, record.entry.get("gpu")):
            # A whole entry, for another GPU: a miss, not a fault.
            problem = f"built on the {record.entry.get('gpu')}, this is the {wanted_gpu}"
            record = None
        # The lock names an engine for this very key: that one, so the lock stays as it is.
        other = locked is not None and (record is None or record.sha256 != locked.sha256)
        if other and locked and self.store.engine_size(locked.sha256) == locked.size:
            wanted = self._wanted(locked.sha256, locked.size, mask, locked.header_mask)
            return Found(state, wanted, locked, None)
        if record is None:
            return Missing(state, problem or NOT_IN_CACHE, invalid=invalid)
        if check_engines:
            size = self.store.engine_size(record.sha256)
            if size != record.size:
                what = "no engine" if size is None else f"an engine of {size} bytes"
                return Missing(state, f"its record names {what}, {record.size} bytes "
                                      "recorded", invalid=True)
        wanted = self._wanted(record.sha256, record.size, mask, record.header_mask)
        if locked is not None and locked.sha256 == record.sha256:
            return Found(state, wanted, locked, record)
        try:
            entry = fetched_entry(plan, state, record, lock_dir, self.store.url)
        except ValueError as error:
            return Missing(state, f"invalid entry: {error}", invalid=True)
        return Found(state, wanted, entry, record)

    def _record(self, key: str, mask: int | None) -> tuple[Record | None, str | None]:
        """The record of `key` if usable, else (None, why not; None when there is none)."""
        from matrix.build.engine_header import describe_mask

        try:
            record = self.store.read_record(key)
        except FileNotFoundError:
            return None, None
        except ValueError as error:
            return None, f"invalid entry: {error}"
        if record.fingerprint != key:
            return None, f"invalid entry: its record is for key {record.fingerprint[:12]}"
        if record.tensorrt_rtx != self.installed:
            return None, (f"invalid entry: built with TensorRT-RTX {record.tensorrt_rtx}, "
                          f"this is {self.installed}")
        if not is_sha256(record.sha256) or record.size <= 0:
            return None, "invalid entry: its record names no engine"
        if mask is not None and record.header_mask != mask:
            return None, (f"invalid entry: its engine targets "
                          f"{' '.join(describe_mask(record.header_mask))}, the cell "
                          f"{' '.join(describe_mask(mask))}")
        return record, None

    def _wanted(self, sha256: str, size: int, mask: int | None, recorded: int) -> Wanted:
        return Wanted(sha256, size, mask if mask is not None else recorded, self.installed)

    # ------------------------------------------------------------------------------- fetch

    def fetch(
        self,
        found: Sequence[Found],
        book: LockBook,
        on_event: Callable[[ProgressEvent], None],
        on_fetched: Callable[[Fetched], None],
    ) -> list[Missing]:
        """Download every found engine into place and into the lock (`book`), a few at a
        time; progress and outcomes are reported in the calling thread, where Ctrl-C
        cancels the downloads. Returns the cells that could not be fetched, and why (a
        refused entry also with a warning)."""
        if not found:
            return []
        fetch = _Fetch(self, book)
        left: list[Missing] = []
        pool = concurrent.futures.ThreadPoolExecutor(min(FETCH_THREADS, len(found)))
        try:
            # Largest first: the run ends when its last download does.
            ordered = sorted(found, key=lambda item: item.wanted.size, reverse=True)
            futures = {pool.submit(fetch.one, item): item for item in ordered}
            for future in futures:
                future.add_done_callback(lambda done: fetch.messages.put(("done", done)))
            waiting = len(futures)
            while waiting:
                try:
                    kind, payload = fetch.messages.get(timeout=0.1)
                except queue.Empty:
                    continue  # wake up now and then so Ctrl-C is handled promptly
                if kind == "event":
                    on_event(payload)
                    continue
                waiting -= 1
                fetched = payload.result()
                if isinstance(fetched, Missing):
                    left.append(fetched)
                    continue
                book.add(fetched.cell_id, fetched.entry, fetched.engine)
                on_fetched(fetched)
        except BaseException:
            fetch.cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return left

    # -------------------------------------------------------------------------------- push

    def pusher(self) -> Pusher:
        return Pusher(self)


class Pusher:
    """Uploads engines in the background while the run goes on; `finish` waits for them."""

    def __init__(self, session: CacheSession) -> None:
        self.session = session
        self.report = PushReport()
        self._pool = concurrent.futures.ThreadPoolExecutor(PUSH_THREADS,
                                                           thread_name_prefix="rtx-matrix-push")
        self._futures: list[concurrent.futures.Future[None]] = []
        self._mutex = threading.Lock()

    def submit(self, entry: LockEntry, engine: Path, check: bool = False) -> None:
        """Push `engine` (described by `entry`); `check` hashes it first (an engine that has
        been on disk a while, rather than one just built and hashed by its builder)."""
        future = self._pool.submit(self._push, entry, engine, check)
        with self._mutex:
            self._futures.append(future)

    def _push(self, entry: LockEntry, engine: Path, check: bool) -> None:
        from matrix import __version__
        from matrix.atomic import sha256_file
        from matrix.engine_cache.record import record_of

        session = self.session
        if session.broken:
            return
        if check and sha256_file(engine) != entry.sha256:
            self._failed(f"{engine.name}: not pushed: it no longer matches the lock")
            return
        record = record_of(entry, session.installed, read_log(engine), __version__)
        try:
            uploaded = session.store.put_engine(str(engine), entry.sha256, entry.size)
            session.store.put_record(record)
        except CacheUnavailable as error:
            session.give_up(error)
            self._failed(str(error))
            return
        with self._mutex:
            if uploaded:
                self.report.pushed += 1
                self.report.bytes += entry.size
            else:
                self.report.present += 1

    def _failed(self, message: str) -> None:
        with self._mutex:
            self.report.failed.append(message)

    def finish(self, cancel: bool = False) -> PushReport:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
        return self.report


class _Fetch:
    """One fetch phase: what its download threads share, and one engine's download."""

    def __init__(self, session: CacheSession, book: LockBook) -> None:
        self.session = session
        self.book = book
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        """("event", ProgressEvent) and ("done", future), for the calling thread."""
        self.cancel = threading.Event()

    def one(self, item: Found) -> Fetched | Missing:
        """Fetch one engine, or say why not (a refused entry after a warning)."""
        from matrix.build.messages import ProgressEvent

        session, cell_id = self.session, item.state.cell.id
        started = time.monotonic()
        self.messages.put(("event", ProgressEvent(cell_id, "start")))
        # Where the lock names this very engine already, it stays in the lock meanwhile.
        named = self.book.entries.get(cell_id) is item.entry
        try:
            if session.broken:
                raise CacheUnavailable("the cache is unavailable")
            download(session.store, item.wanted, item.state.engine, self._progress(item),
                     self.cancel, None if named else self._leave_lock(cell_id))
        except Rejected as error:
            return self._refused(item, f"cache entry rejected: {error}")
        except CacheUnavailable as error:
            session.give_up(error)
            return Missing(item.state, "the cache is unavailable")
        except FileNotFoundError:
            if item.record is None:  # the engine the lock names: the cache does not have it
                return Missing(item.state, NOT_IN_CACHE)
            return self._refused(item, "cache entry rejected: its record names an engine "
                                       "the cache does not have")
        except OSError as error:
            return self._refused(item, f"cannot write the engine from the cache: "
                                       f"{describe(error)}")
        finally:
            self.messages.put(("event", ProgressEvent(cell_id, "end")))
        write_log(item, session.store.url)
        # The record only: the engine's mtime stays what `verified` marked.
        session.store.touch(session.store.record_path(item.entry.fingerprint))
        return Fetched(cell_id, item.entry, item.state.engine, time.monotonic() - started)

    def _progress(self, item: Found) -> Callable[[int], None]:
        from matrix.build.messages import ProgressEvent

        cell_id, total = item.state.cell.id, item.wanted.size
        return lambda done: self.messages.put(
            ("event", ProgressEvent(cell_id, "download", step=done, steps=total))
        )

    def _leave_lock(self, cell_id: str) -> Callable[[], None]:
        """A cell getting another engine than its lock entry names leaves the lock before
        its engine file is replaced, as a build's does."""
        return lambda: self.book.drop([cell_id])

    def _refused(self, item: Found, why: str) -> Missing:
        self.session.warn(f"{item.state.cell.id}: {why}")
        return Missing(item.state, "its cache entry was refused", invalid=True)


def fetched_entry(plan: Plan, state: CellState, record: Record, lock_dir: Path,
                  source: str) -> LockEntry:
    """This lock's entry for an engine built elsewhere: the engine's facts from its record,
    the paths, model and options from this plan. ValueError when the record's entry is
    malformed."""
    from matrix.lockfile.book import model_ref
    from matrix.lockfile.fingerprint import build_options

    cell = state.cell
    recorded = record.lock_entry()
    return replace(
        recorded,
        path=relative_posix(state.engine, lock_dir),
        sha256=record.sha256,
        size=record.size,
        model=model_ref(plan, cell, lock_dir),
        targets=cell.target.spec,
        resolved_targets=state.resolved_targets or recorded.resolved_targets,
        runs_on=record.runs_on,
        weightless=cell.weightless,
        options=MappingProxyType(build_options(cell)),
        fingerprint=state.fingerprint or recorded.fingerprint,
        build_seconds=record.build_seconds,
        built_at=record.built_at,
        header_mask=record.header_mask,
        source=source,
    )


def write_log(item: Found, url: str) -> None:
    """The builder's log beside the fetched engine, as a build leaves it (best effort)."""
    log = item.record.log if item.record is not None else ""
    note = f"rtx-matrix: engine {item.wanted.sha256[:12]} fetched from the cache {url}\n"
    with contextlib.suppress(OSError):
        item.state.engine.with_suffix(".log").write_text(log + note, encoding="utf-8")


def read_log(engine: Path) -> str:
    try:
        return engine.with_suffix(".log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
