"""The JSON Schemas shipped with rtx-matrix: the manifest's, the lockfile's and the bundle's."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from matrix.errors import InputError

NAMES = ("manifest", "lockfile", "bundle")

_PACKAGE_DIR = Path(__file__).resolve().parent
# A wheel carries them inside the package (hatch force-include); an editable install or a
# checkout reads them from the repository's top-level schemas/ folder.
_SEARCH = (_PACKAGE_DIR / "schemas", _PACKAGE_DIR.parent / "schemas")


def schema_path(name: str) -> Path:
    """Path of `<name>.schema.json`; InputError for an unknown name or a broken install."""
    if name not in NAMES:
        raise InputError(f"unknown schema {name!r}: choose one of {', '.join(NAMES)}")
    for folder in _SEARCH:
        candidate = folder / f"{name}.schema.json"
        if candidate.is_file():
            return candidate
    searched = " or ".join(str(folder) for folder in _SEARCH)
    raise InputError(f"{name}.schema.json is missing from {searched}: reinstall rtx-matrix")


@cache
def _load(name: str) -> str:
    return schema_path(name).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema; a fresh dict each call so callers may not corrupt the cache."""
    schema: dict[str, Any] = json.loads(_load(name))
    return schema


def schema_text(name: str) -> str:
    """The schema file's text, exactly as shipped."""
    return _load(name)
