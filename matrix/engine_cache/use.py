"""The engine cache inside one `build` or `cache pull` run (`matrix.build.run`).

Before anything builds, every stale cell is looked up (cells this host cannot build for
want of a GPU too: a CPU machine can still fetch them); the hits are downloaded, checked
and renamed into place; the rest are built, and each built engine is pushed while the run
goes on. A `--force` run rebuilds: it does not fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from matrix.engine_cache.session import CacheSession, Fetched, Found, Pusher, open_session
from matrix.lockfile.freshness import FORCED, CellState
from matrix.lockfile.types import LockEntry
from matrix.manifest.types import CacheSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from matrix.build.executor import CellTask, Outcome
    from matrix.build.progress import Display
    from matrix.lockfile.book import LockBook
    from matrix.lockfile.survey import Survey


@dataclass
class CacheUse:
    """No cache at all when `session` is None: every method then does nothing."""

    session: CacheSession | None
    found: dict[str, Found] = field(default_factory=dict)
    """Cells the cache serves: after `fetch`, only those it did."""
    misses: dict[str, str] = field(default_factory=dict)
    """Why each other stale cell was not found."""
    fetch_only: bool = False
    pusher: Pusher | None = None

    @classmethod
    def look_up(
        cls, spec: CacheSpec, state: Survey, display: Display, fetch_only: bool = False
    ) -> CacheUse:
        wanted = [
            s for s in state.freshness.stale if s.fingerprint and FORCED not in s.reasons
        ]
        session = open_session(spec, display.warn) if wanted or not fetch_only else None
        if session is None:
            return cls(None, fetch_only=fetch_only)
        use = cls(session, fetch_only=fetch_only)
        lock_dir = state.lock_path.parent.resolve()
        for result in session.lookup(state.plan, wanted, state.lock, lock_dir, gpu=state.gpu,
                                     trust_lock=True):
            cell_id = result.state.cell.id
            if isinstance(result, Found):
                use.found[cell_id] = result
                continue
            use.misses[cell_id] = result.reason
            if result.invalid:
                display.warn(f"{cell_id}: cache entry rejected: {result.reason}")
        if wanted and not session.broken:
            # "found" would promise too much: an engine the lock names is asked for only
            # by its download (`trust_lock`).
            display.note(f"cache {session.store.url}: {len(use.found)} of {len(wanted)} "
                         "stale cells to fetch")
        return use

    def extra_cells(self, state: Survey) -> tuple[str, ...]:
        """Cells found that this host could not build (they need a GPU): fetched too."""
        return tuple(s.cell.id for s in state.skipped if s.cell.id in self.found)

    def fetch(
        self, state: Survey, book: LockBook, display: Display
    ) -> tuple[list[Outcome], list[CellState]]:
        """Fetch every found cell: their outcomes, and the buildable cells the cache could
        not serve after all (a refused entry with a warning), to be built."""
        from matrix.build.executor import Outcome, Status

        if self.session is None or not self.found:
            return [], []
        outcomes: list[Outcome] = []

        def fetched(item: Fetched) -> None:
            outcome = Outcome(item.cell_id, Status.FETCHED, item.seconds, bytes=item.entry.size)
            outcomes.append(outcome)
            display.outcome(outcome)

        left = self.session.fetch(list(self.found.values()), book, display.event, fetched)
        refused = []
        for missing in left:
            cell_id = missing.state.cell.id
            del self.found[cell_id]
            self.misses[cell_id] = missing.reason
            if state.buildable_here(missing.state):
                refused.append(missing.state)
        return outcomes, refused

    def on_built(self) -> Callable[[LockEntry, Path], None] | None:
        """The push of each engine the run builds, or None when nothing is pushed."""
        if self.session is None or self.fetch_only or not self.session.push:
            return None
        self.pusher = self.session.pusher()
        return self.pusher.submit

    def why_not(self, task: CellTask) -> str:
        return self.misses.get(task.request.cell_id, "not in the cache")

    def finish(self, display: Display, cancel: bool = False) -> None:
        """Wait for the pushes (or drop those not started, when interrupted)."""
        if self.pusher is None or self.session is None:
            return
        report = self.pusher.finish(cancel)
        self.pusher = None
        if cancel:
            return
        url = self.session.store.url
        if report.pushed or report.present:
            present = f", {report.present} already there" if report.present else ""
            from matrix.build.progress import size_text

            display.note(f"cache {url}: pushed {report.pushed} engines "
                         f"({size_text(report.bytes)}){present}")
