"""What the `rtx-matrix cache` subcommands do, callable from Python:

    from matrix.engine_cache.commands import pull
    from matrix.lockfile.survey import survey

    outcomes = pull(survey(Path("rtx-matrix.yaml")), CacheSpec("s3://team/engines"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from matrix.engine_cache.store import CacheUnavailable, EngineStore
from matrix.errors import CacheError
from matrix.manifest.types import CacheSpec

if TYPE_CHECKING:
    from matrix.build.executor import Outcome
    from matrix.engine_cache.gc import GcReport
    from matrix.engine_cache.report import CellEntry
    from matrix.engine_cache.session import PushReport
    from matrix.lockfile.survey import Survey

NO_CACHE = (
    "no engine cache: give --cache URL, set RTX_MATRIX_CACHE, or add "
    "'cache: {url: ...}' to the manifest"
)


def require(spec: CacheSpec | None) -> CacheSpec:
    if spec is None:
        raise CacheError(NO_CACHE)
    return spec


def open_store(spec: CacheSpec) -> EngineStore:
    try:
        return EngineStore(spec)
    except CacheUnavailable as error:
        raise CacheError(str(error)) from None


def pull(
    state: Survey,
    spec: CacheSpec,
    *,
    quiet: bool = False,
    verbose: bool = False,
    wait: float = 0.0,
    resurvey: Callable[[], Survey] | None = None,
) -> list[Outcome]:
    """Fetch every stale cell the cache has into the output folder and the lock, building
    nothing; the cells it lacks come back NOT_STARTED with the reason."""
    from matrix.build.run import BuildSettings, build

    open_store(spec)  # an unusable cache is this command's error, not a warning
    # `push` stays as configured: a pull builds nothing to push, but where the run may write
    # the cache it touches what it fetched, for `cache gc`'s least-recently-used order.
    settings = BuildSettings(cache=spec, fetch_only=True, quiet=quiet, verbose=verbose, wait=wait)
    return build(state, settings, resurvey=resurvey)


@dataclass
class PushResult:
    report: PushReport
    stale: list[str] = field(default_factory=list)
    """Chosen cells not pushed because their engine is not the one the plan wants."""


def push(state: Survey, spec: CacheSpec) -> PushResult:
    """Upload the engine of every chosen up-to-date cell the lock names (each hashed first:
    an engine edited since it was locked is not pushed). A manifest's `push: false` is for
    builds: an explicit push goes ahead; a read-only (http) cache is an error."""
    from matrix.engine_cache.config import display_url, read_only
    from matrix.engine_cache.session import CacheSession, PushReport

    if read_only(spec.url):
        raise CacheError(f"cache {display_url(spec.url)}: an http(s) cache is read-only")
    session = CacheSession(open_store(spec), _ignore)
    stale = [s.cell.id for s in state.freshness.stale]
    lock = state.lock
    if lock is None or not state.freshness.up_to_date:
        return PushResult(PushReport(), stale)
    pusher = session.pusher()
    for fresh in state.freshness.up_to_date:
        pusher.submit(lock.engines[fresh.cell.id], fresh.engine, check=True)
    try:
        report = pusher.finish()
    except KeyboardInterrupt:
        pusher.finish(cancel=True)
        raise
    if session.broken:
        raise CacheError(session.failure)
    return PushResult(report, stale)


def status(state: Survey, spec: CacheSpec, verify: bool = False) -> list[CellEntry]:
    """What the cache holds for every chosen buildable cell of the plan."""
    from matrix.engine_cache.report import cell_entries
    from matrix.engine_cache.session import CacheSession

    session = CacheSession(open_store(spec), _ignore)
    chosen = {cell.id for cell in state.chosen}
    cells = [s for s in state.freshness.cells if s.cell.id in chosen]
    entries = cell_entries(session, state, cells, verify)
    if session.broken:
        raise CacheError(session.failure)
    return entries


def _ignore(message: str) -> None:
    del message  # a command's store failure is raised as its error instead


def gc(spec: CacheSpec, max_bytes: int) -> GcReport:
    from matrix.engine_cache.gc import collect_garbage

    store = open_store(spec)
    try:
        return collect_garbage(store, max_bytes)
    except CacheUnavailable as error:
        raise CacheError(str(error)) from None
