"""The application side: pick the engine a user's GPU loads, and make it ready on first launch.

An application ships a bundle (`rtx-matrix bundle`) and calls

    from matrix import runtime
    chosen = runtime.select("path/to/bundle", "8.6")   # pure: which engine per family
    ready = runtime.prepare("path/to/bundle")          # + refit weightless engines, cached

Importing this package costs no `tensorrt_rtx`, `onnx`, `rich` or `yaml`: `select` runs in
milliseconds; only a refit in `prepare` loads TensorRT-RTX. See docs/deploy.md.
"""

from __future__ import annotations

from matrix.runtime.bundle import (
    BUNDLE_FILE,
    Bundle,
    BundleDamaged,
    BundleEngine,
    check_bundle,
    read_bundle,
    verify_bundle,
)
from matrix.runtime.prepare import Prepared, Ready, Refitter, prepare
from matrix.runtime.select import Choice, Selection, select

__all__ = [
    "BUNDLE_FILE",
    "Bundle",
    "BundleDamaged",
    "BundleEngine",
    "Choice",
    "Prepared",
    "Ready",
    "Refitter",
    "Selection",
    "check_bundle",
    "prepare",
    "read_bundle",
    "select",
    "verify_bundle",
]
