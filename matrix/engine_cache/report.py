"""What the cache holds for each cell: `cache status`, and the cache column of `status`.

Parse, check, report: `cell_entries` collects one `CellEntry` per cell; `entry_lines` and
`entries_json` render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matrix.engine_cache.session import NOT_IN_CACHE, CacheSession, Found
from matrix.engine_cache.store import CacheUnavailable, Rejected
from matrix.engine_cache.transfer import download
from matrix.lockfile.freshness import CellState

if TYPE_CHECKING:
    from matrix.lockfile.survey import Survey

PRESENT = "present"
MISSING = "missing"
INVALID = "invalid"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class CellEntry:
    cell_id: str
    state: str
    """present, missing, invalid, or unknown (the key needs a GPU, or the cache failed)."""
    size: int | None = None
    detail: str = ""


def cell_entries(
    session: CacheSession, survey: Survey, cells: Sequence[CellState], verify: bool = False
) -> list[CellEntry]:
    """One entry per cell, in order. `verify` downloads every present engine and checks it
    as a fetch would (nothing is written)."""
    lock_dir = survey.lock_path.parent.resolve()
    known = [state for state in cells if state.fingerprint]
    found = session.lookup(survey.plan, known, survey.lock, lock_dir, check_engines=True,
                           gpu=survey.gpu)
    by_id = {result.state.cell.id: result for result in found}
    entries = []
    for state in cells:
        result = by_id.get(state.cell.id)
        if result is None:
            entries.append(CellEntry(state.cell.id, UNKNOWN, detail="its key needs a GPU"))
        elif isinstance(result, Found):
            entries.append(_present(session, result, verify))
        elif session.broken:
            entries.append(CellEntry(state.cell.id, UNKNOWN, detail=result.reason))
        else:
            detail = "" if result.reason == NOT_IN_CACHE else result.reason
            entries.append(CellEntry(state.cell.id, INVALID if result.invalid else MISSING,
                                     detail=detail))
    return entries


def _present(session: CacheSession, found: Found, verify: bool) -> CellEntry:
    cell_id, size = found.state.cell.id, found.wanted.size
    if verify:
        try:
            download(session.store, found.wanted, None)
        except Rejected as error:
            return CellEntry(cell_id, INVALID, size, str(error))
        except FileNotFoundError:
            return CellEntry(cell_id, INVALID, size, "its engine is gone")
        except CacheUnavailable as error:
            session.give_up(error)
            return CellEntry(cell_id, UNKNOWN, size, str(error))
    return CellEntry(cell_id, PRESENT, size, "the engine the lock names" if
                     found.record is None else "")


def entry_lines(entries: Sequence[CellEntry], url: str) -> list[str]:
    from matrix.build.progress import size_text

    width = max((len(entry.cell_id) for entry in entries), default=0)
    lines = []
    for entry in entries:
        size = size_text(entry.size) if entry.size is not None else ""
        detail = f"  {entry.detail}" if entry.detail else ""
        lines.append(f"{entry.cell_id:<{width}}  {entry.state:<8}{size:>10}{detail}".rstrip())
    counts = {state: [e for e in entries if e.state == state]
              for state in (PRESENT, MISSING, INVALID, UNKNOWN)}
    present = sum(e.size or 0 for e in counts[PRESENT])
    parts = [f"{len(counts[PRESENT])} present ({size_text(present)})",
             f"{len(counts[MISSING])} missing", f"{len(counts[INVALID])} invalid"]
    if counts[UNKNOWN]:
        parts.append(f"{len(counts[UNKNOWN])} unknown")
    lines.append(f"cache {url}: {len(entries)} cells: {', '.join(parts)}")
    return lines


def entries_json(entries: Sequence[CellEntry], url: str) -> dict[str, Any]:
    return {
        "cache": url,
        "cells": [
            {"id": e.cell_id, "state": e.state, "size": e.size, "detail": e.detail}
            for e in entries
        ],
    }


def short_text(entry: CellEntry) -> str:
    """The cache's word on one stale cell, for `rtx-matrix status`."""
    from matrix.build.progress import size_text

    if entry.state == PRESENT:
        return f"in the cache ({size_text(entry.size or 0)})"
    if entry.state == MISSING:
        return f"not in the cache: {entry.detail}" if entry.detail else "not in the cache"
    return f"cache: {entry.state}: {entry.detail}"
