"""Versions that decide engine bytes, read without importing the heavy libraries."""

from __future__ import annotations

import os
from functools import cache
from importlib import metadata

VERSION_OVERRIDE = "RTX_MATRIX_TENSORRT_RTX_VERSION"
"""Testing hook: pretend another TensorRT-RTX is installed (fingerprints and lock only)."""


@cache
def installed_tensorrt_rtx() -> str:
    """`1.7.1.116`; from package metadata, because importing tensorrt_rtx costs ~0.5 s."""
    override = os.environ.get(VERSION_OVERRIDE)
    if override:
        return override
    for dist in ("tensorrt_rtx", "tensorrt-rtx"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
