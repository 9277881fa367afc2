"""Remember manifests that passed the JSON Schema, so an unchanged one skips jsonschema.

Importing jsonschema and validating a 100-model manifest cost about 90 ms, a third of a
no-op `build`'s budget. A manifest's schema verdict depends only on its bytes and the
schema's, so an empty stamp file named by their digest records it. Only a manifest that
loaded without any problem is stamped; the semantic checks always run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from matrix.cache_dir import cache_dir
from matrix.schemas import schema_text

STAMP_VERSION = b"1"
"""Bump when schema checking itself changes meaning (not for schema edits: they are hashed)."""


def stamp_path(raw: bytes) -> Path:
    digest = hashlib.sha256()
    for part in (STAMP_VERSION, schema_text("manifest").encode(), raw):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return cache_dir() / "valid-manifests" / digest.hexdigest()


def known_valid(raw: bytes) -> bool:
    return stamp_path(raw).is_file()


def remember_valid(raw: bytes) -> None:
    """Best effort: a read-only or full cache only costs the next run some time."""
    path = stamp_path(raw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        pass
