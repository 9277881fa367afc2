"""Versions that decide engine bytes, read without importing the heavy libraries."""

from __future__ import annotations

import os
from functools import cache
from importlib.util import find_spec
from pathlib import Path

VERSION_OVERRIDE = "RTX_MATRIX_TENSORRT_RTX_VERSION"
"""Testing hook: pretend another TensorRT-RTX is installed (fingerprints and lock only)."""


@cache
def installed_tensorrt_rtx() -> str:
    """`1.7.1.116`; from package metadata, because importing tensorrt_rtx costs ~0.5 s."""
    override = os.environ.get(VERSION_OVERRIDE)
    if override:
        return override
    return _dist_info_version() or _metadata_version() or "unknown"


def _dist_info_version() -> str | None:
    """The version in the name of the package's `.dist-info` folder, which pip names
    `tensorrt_rtx-VERSION.dist-info` beside the package: one directory listing, where
    `importlib.metadata` costs every run ~20 ms of imports and a scan of sys.path."""
    spec = find_spec("tensorrt_rtx")
    if spec is None or spec.origin is None:
        return None
    found = list(Path(spec.origin).parent.parent.glob("tensorrt_rtx-*.dist-info"))
    if len(found) != 1:
        return None  # not a plain pip install, or leftovers: ask the metadata
    return found[0].name[len("tensorrt_rtx-") : -len(".dist-info")]


def _metadata_version() -> str | None:
    from importlib import metadata

    for dist in ("tensorrt_rtx", "tensorrt-rtx"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None
