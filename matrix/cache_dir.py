"""Where rtx-matrix keeps caches of its own (ONNX facts, validated manifests, refitted engines).

A module of its own so the no-op path can find it without importing what uses it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("RTX_MATRIX_CACHE_DIR"):
        return Path(os.environ["RTX_MATRIX_CACHE_DIR"])
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):  # the per-user, non-roaming place
        return Path(os.environ["LOCALAPPDATA"]) / "rtx-matrix" / "Cache"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "rtx-matrix"
    return Path.home() / ".cache" / "rtx-matrix"
