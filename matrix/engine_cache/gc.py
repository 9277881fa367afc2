"""`cache gc`: keep a folder cache under a size, least recently used entries out first.

A fetch touches its record, a push writes its record and engine, so the later of their
mtimes says when an entry was last used (a fetch leaves the engine's mtime alone:
`matrix.engine_cache.verified` trusts it). Records go first (a reader then sees no entry,
never a record naming a deleted engine), then the engines no record names any more.
Temporaries of killed pushes and engines no record names are removed once older than
`GRACE`: a push in flight writes its engine some moments before its record. Object stores
have lifecycle rules for this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from matrix.engine_cache.record import record_from_json
from matrix.engine_cache.store import TEMP_MARK, CacheUnavailable, EngineStore, Listed
from matrix.errors import UsageError

GRACE = 3600.0
"""Seconds an unnamed engine or a temporary may be a push in flight."""


@dataclass(frozen=True)
class GcReport:
    removed_entries: int
    removed_bytes: int
    kept_entries: int
    kept_bytes: int


@dataclass
class _Entry:
    record: Listed
    sha256: str | None
    last_used: float


def collect_garbage(store: EngineStore, max_bytes: int, now: float | None = None) -> GcReport:
    if not store.is_folder:
        raise UsageError(f"cache gc works on folder caches; {store.url} is {store.protocol}:// "
                         "(use the store's own lifecycle rules)")
    now = time.time() if now is None else now
    records = store.list("records")
    engines = {_sha_of(e.path): e for e in store.list("engines") if TEMP_MARK not in e.path}
    removed = removed_bytes = 0
    for leftover in store.list("records") + store.list("engines"):
        if TEMP_MARK in leftover.path and now - leftover.mtime > GRACE:
            store.remove(leftover.path)
    entries = []
    for listed in records:
        if TEMP_MARK in listed.path:
            continue
        sha = _record_sha(store, listed)
        engine = engines.get(sha) if sha else None
        if engine is None:
            # A record without its engine (or not a record) serves nobody.
            store.remove(listed.path)
            removed, removed_bytes = removed + 1, removed_bytes + listed.size
            continue
        entries.append(_Entry(listed, sha, max(listed.mtime, engine.mtime)))
    named = {entry.sha256 for entry in entries}
    for sha, engine in list(engines.items()):
        if sha not in named and now - engine.mtime > GRACE:
            store.remove(engine.path)
            removed_bytes += engine.size
            del engines[sha]
    total = sum(e.size for e in engines.values()) + sum(e.record.size for e in entries)
    users = {sha: sum(1 for e in entries if e.sha256 == sha) for sha in named}
    entries.sort(key=lambda e: (e.last_used, e.record.path))
    kept = list(entries)
    for entry in entries:
        if total <= max_bytes:
            break
        store.remove(entry.record.path)
        kept.remove(entry)
        removed += 1
        freed = entry.record.size
        assert entry.sha256 is not None
        users[entry.sha256] -= 1
        if not users[entry.sha256]:
            engine = engines.pop(entry.sha256)
            store.remove(engine.path)
            freed += engine.size
        total -= freed
        removed_bytes += freed
    return GcReport(removed, removed_bytes, len(kept), total)


def _record_sha(store: EngineStore, listed: Listed) -> str | None:
    try:
        return record_from_json(store.read(listed.path)).sha256
    except (OSError, ValueError, CacheUnavailable):
        return None


def _sha_of(path: str) -> str:
    return path.rpartition("/")[2].removesuffix(".engine")
