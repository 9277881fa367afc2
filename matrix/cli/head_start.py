"""`build`'s first worker, started before anything else when a build is almost sure.

A worker takes ~80 ms to start Python and import the library; the parent takes about as
long to import its own modules, parse its arguments and plan. Started first, the two
overlap (bench/bench_overhead.py). A glance at the command line and two stat() calls
decide, so a run with nothing to build (its lock newer than its manifest) starts nothing.
Once the arguments are parsed, `build` makes the real decision: its worker pool adopts this
worker, or it is killed. Only the posix pool adopts one (`matrix.build.pools.local_kind`):
with the portable pool, workers start once the arguments are parsed.

Only the standard library's smallest modules are imported before the worker starts: this
runs ahead of every other import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matrix.build.pools.posix_child import Child

DEFAULT_MANIFEST = "rtx-matrix.yaml"
"""`matrix.plan.load.DEFAULT_MANIFEST` (tests hold them equal; that module imports pathlib)."""

_NOT_NOW = frozenset(
    {"-h", "--help", "--dry-run", "--check", "--executor", "--scheduler", "--pool", "-o",
     "--output"}
)
"""Options after which no CPU worker is wanted before the arguments are parsed: no build,
maybe not a local CPU one, or a lock elsewhere. The parsed decision still applies."""

_started: Child | None = None


def start(argv: Sequence[str]) -> None:
    """Start one worker when `argv` looks like a `build` that will build."""
    global _started
    if _started is None and _looks_like_a_build(argv):
        from matrix.build.pools import local_kind

        if local_kind() != "posix":
            return
        from matrix.build.pools import posix_child

        # Only a head start: should it fail, the pool starts its workers later or says why not.
        with contextlib.suppress(OSError):
            _started = posix_child.Child()


def take() -> Child | None:
    """The worker `start` started, now the caller's to adopt or `discard`."""
    global _started
    child, _started = _started, None
    return child


def discard(child: Child | None) -> None:
    if child is not None:
        child.end()


def build_likely(manifest: str, lock: str, force: bool) -> bool:
    """`--force`, no lock yet, or a manifest edited after the last lock write; never when
    the manifest is missing (that run fails on it)."""
    try:
        edited = os.stat(manifest).st_mtime_ns
    except OSError:
        return False
    if force:
        return True
    try:
        return os.stat(lock).st_mtime_ns < edited
    except OSError:
        return True


def default_lock(manifest: str) -> str:
    """`matrix.manifest.types.default_lock_path` on strings (tests hold them equal)."""
    return os.path.splitext(manifest)[0] + ".lock"


def _looks_like_a_build(argv: Sequence[str]) -> bool:
    if not argv or argv[0] != "build":
        return False
    words = argv[1:]
    if any(word.split("=", 1)[0] in _NOT_NOW for word in words):
        return False
    manifest = next(
        (w for w in words if w.endswith((".yaml", ".yml")) and not w.startswith("-")),
        DEFAULT_MANIFEST,
    )
    return build_likely(manifest, default_lock(manifest), "--force" in words)
