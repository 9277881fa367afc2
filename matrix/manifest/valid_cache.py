"""Remember manifests that passed the JSON Schema, so an unchanged one skips jsonschema.

Importing jsonschema and validating a 100-model manifest cost about 90 ms, a third of a
no-op `build`'s budget. A manifest's schema verdict depends only on its bytes and the
schema's, so an empty stamp file named by their digest records it. Only a manifest that
loaded without any problem is stamped; the semantic checks always run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from matrix.cache_dir import cache_dir
from matrix.schemas import schema_text

KEEP = 500
"""Stamps kept: every edit of a manifest leaves one, so the least recently used go."""
STAMP_VERSION = b"1"
"""Bump when schema checking itself changes meaning (not for schema edits: they are hashed)."""


def stamp_path(raw: bytes) -> Path:
    digest = hashlib.sha256()
    for part in (STAMP_VERSION, schema_text("manifest").encode(), raw):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return cache_dir() / "valid-manifests" / digest.hexdigest()


def known_valid(raw: bytes) -> bool:
    path = stamp_path(raw)
    try:
        os.utime(path)  # its mtime is its last use: pruning keeps the stamps in use
    except FileNotFoundError:
        return False
    except OSError:
        return path.is_file()  # a read-only cache still answers
    return True


def remember_valid(raw: bytes) -> None:
    """Best effort: a read-only or full cache only costs the next run some time."""
    path = stamp_path(raw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        prune(path.parent, KEEP)
    except OSError:
        pass


def prune(folder: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used stamps. Runs only after a schema check,
    which costs far more than listing the folder."""
    entries = list(os.scandir(folder))
    if len(entries) <= keep:
        return
    entries.sort(key=lambda entry: entry.stat().st_mtime_ns, reverse=True)
    for entry in entries[keep:]:
        with contextlib.suppress(FileNotFoundError):  # another run pruned it first
            os.unlink(entry.path)
