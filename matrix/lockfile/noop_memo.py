"""The verdict of the next `build`, kept by the last one, so that a no-op need not plan.

A no-op over 10,000 cells spends its time importing, loading the plan and checking each
cell, to print one line. Like ninja's log, the verdict is kept with the stat of every file
it was read from: the manifest, the lock, each model and its external data, each engine,
the folder TensorRT-RTX is installed in, and rtx-matrix's own code. A later run with the
same command line, working folder, interpreter and RTX_MATRIX_* variables that finds every
one of them unchanged would reach the same verdict, so it prints the same lines instead. A
no-op keeps its own verdict; a build in which every cell ended up built, fetched or up to
date keeps "every cell up to date", which the lock and stamps it just wrote make true.

As the stamps do (`matrix.lockfile.stamps`), a stat vouches for its file; a file modified
since the run began, or just before (racy, `matrix.file_stat`), leaves no memo. Kept in the
user's cache folder like the plan and lock caches (`matrix.pickle_cache`).

Only for `rtx-matrix build [MANIFEST]` started from the console, where nothing else about
the run can differ: Python callers of `matrix.cli.main` and the tests plan every time. Never
for a plan with a GPU cell: whether it builds here depends on the host's GPUs, not on files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING, NamedTuple

from matrix import pickle_cache
from matrix.file_stat import file_stat, is_racy

if TYPE_CHECKING:
    from pathlib import Path

    from matrix.lockfile.survey import Survey

FORMAT = 2
KEEP = 50
"""Entries kept, one per working folder and command line."""
ENV_PREFIX = "RTX_MATRIX_"

Stat = tuple[int, int, int]
"""A `FileStat` as a plain tuple (equal to it): 10,000 of them pickle five times faster."""


class Key(NamedTuple):
    format: int
    argv: tuple[str, ...]
    cwd: str
    environ: tuple[tuple[str, str], ...]
    python: tuple[str, ...]
    """The interpreter and its module search path: where TensorRT-RTX is found."""
    code: pickle_cache.CodeStats
    files: tuple[str, ...]
    stats: tuple[Stat, ...]


def eligible(argv: Sequence[str]) -> bool:
    """`build` with at most a manifest: no option can change the verdict or its words."""
    return len(argv) in (1, 2) and argv[0] == "build" and not argv[-1].startswith("-")


def replay(argv: Sequence[str]) -> str | None:
    """What the remembered no-op printed, when every file it read is unchanged; else None."""
    if not eligible(argv):
        return None
    code = pickle_cache.code_as_imported()
    if code is None:
        return None
    wanted = _key(argv, code, (), ())

    def holds(key: object) -> bool:
        return (
            isinstance(key, Key)
            and key._replace(files=(), stats=()) == wanted
            and all(file_stat(p) == stat for p, stat in zip(key.files, key.stats, strict=True))
        )

    said = pickle_cache.load(_entry(wanted), holds)
    return said if isinstance(said, str) else None


def remember(argv: Sequence[str], state: Survey, said: str, started_ns: int) -> None:
    """Keep `said` as the verdict of the next run's survey, which this run (begun at
    `started_ns`) leaves every cell of `state` up to date for: a no-op, or a build in which
    every cell was built, fetched or up to date already (its lock and stamps then say so)."""
    code = pickle_cache.code_as_imported()
    if code is None or not eligible(argv) or state.skipped:
        return
    plan = state.plan
    if any(cell.needs_gpu for cell in plan.cells):
        return
    library = _library_folder()
    if library is None:
        return
    inputs = [str(plan.manifest.path), library]
    for facts in plan.facts.values():
        folder = os.path.dirname(facts.path)
        inputs += [facts.path, *(os.path.join(folder, name) for name in facts.external_files)]
    stats: list[Stat] = []
    for path in inputs:
        stat = file_stat(path)
        if stat is None or is_racy(stat, started_ns):
            return
        stats.append((stat.size, stat.mtime_ns, stat.ino))
    # The lock's and each engine's stat as its stamp holds it: taken when this run wrote
    # it or found it unchanged, so no second stat, and no racy rule (as for the stamps).
    outputs = [str(state.lock_path), *(cell.engine_file for cell in state.freshness.cells)]
    for path in outputs:
        recorded = state.stamps.recorded_stat(path)
        if recorded is None:
            return
        stats.append(recorded)
    key = _key(argv, code, (*inputs, *outputs), tuple(stats))
    pickle_cache.store(_entry(key), key, said, KEEP)


def _key(
    argv: Sequence[str],
    code: pickle_cache.CodeStats,
    files: tuple[str, ...],
    stats: tuple[Stat, ...],
) -> Key:
    environ = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    python = (sys.executable, *sys.path)
    return Key(FORMAT, tuple(argv), os.getcwd(), environ, python, code, files, stats)


def _entry(key: Key) -> Path:
    """One entry per command line, folder, environment and interpreter: runs that differ in
    those never push each other's memo out."""
    name = repr((key.argv, key.cwd, key.environ, key.python))
    return pickle_cache.entry_path("noop", name)


def _library_folder() -> str | None:
    """The folder holding TensorRT-RTX's package and its `.dist-info` (`matrix.versions`):
    installing, upgrading or removing a package there changes its stat."""
    spec = find_spec("tensorrt_rtx")
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.dirname(spec.origin))
