"""Remember manifests and lockfiles that passed their JSON Schema, so an unchanged one
skips jsonschema.

Importing jsonschema and validating a 100-model manifest cost about 90 ms, a third of a
no-op `build`'s budget; a fresh clone's lock, which no cache knows by its path, cost 0.2 s.
A document's schema verdict depends only on its bytes and the schema's, so an empty mark
file named by their digest records it: keyed by content, not by stat, it still holds when a
checkout or a copy gives the same bytes new stats. Only a document that loaded without any
problem is marked; the semantic checks always run. (A plan found in `matrix.plan.cache`
skips the loader, and so this, altogether.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from matrix.cache_dir import cache_dir
from matrix.schemas import schema_text

KEEP = 500
"""Marks kept: every edit of a manifest leaves one, so the least recently used go."""
MARK_VERSION = b"1"
"""Bump when schema checking itself changes meaning (not for schema edits: they are hashed)."""


def mark_path(raw: bytes, schema: str = "manifest") -> Path:
    """The mark of `raw` valid against schema `schema` (`manifest`, `lockfile`)."""
    digest = hashlib.sha256()
    for part in (MARK_VERSION, schema_text(schema).encode(), raw):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return cache_dir() / f"valid-{schema}s" / digest.hexdigest()


def known_valid(raw: bytes, schema: str = "manifest") -> bool:
    path = mark_path(raw, schema)
    try:
        os.utime(path)  # its mtime is its last use: pruning keeps the marks in use
    except FileNotFoundError:
        return False
    except OSError:
        return path.is_file()  # a read-only cache still answers
    return True


def remember_valid(raw: bytes, schema: str = "manifest") -> None:
    """Best effort: a read-only or full cache only costs the next run some time."""
    path = mark_path(raw, schema)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        prune(path.parent, KEEP)
    except OSError:
        pass


def prune(folder: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used files of `folder`. Runs only after the
    work its cache saves (here a schema check), which costs far more than listing it."""
    entries = list(os.scandir(folder))
    if len(entries) <= keep:
        return
    entries.sort(key=lambda entry: entry.stat().st_mtime_ns, reverse=True)
    for entry in entries[keep:]:
        with contextlib.suppress(FileNotFoundError):  # another run pruned it first
            os.unlink(entry.path)
