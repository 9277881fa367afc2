"""Where a manifest stands: its plan, its lock, and which chosen cells are stale and why.

The read-only front half shared by `build`, `build --dry-run/--check` and `status`: it reads
the manifest, the facts cache, the lock and the stamps, and writes nothing in the project,
only the caches of rtx-matrix's cache folder (docs/caches.md).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matrix.errors import InputError
from matrix.file_stat import FileStat, file_stat
from matrix.lockfile import cache as lock_cache
from matrix.lockfile.freshness import CellState, Freshness, check
from matrix.lockfile.io import read_lock
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock
from matrix.plan.load import load_plan
from matrix.plan.types import Cell, Plan
from matrix.versions import installed_tensorrt_rtx

if TYPE_CHECKING:  # only named: a no-op run needs no GPU
    from matrix.gpu import Gpu


CURRENT_ON_CLUSTER = (
    "a `current` cell builds for the GPU of the machine that builds it, which a Dask cluster "
    "does not name in advance: target that GPU's CC instead (e.g. sm89)"
)


@dataclass(frozen=True)
class Survey:
    """Where a manifest stands: its plan, lock and the freshness of the chosen cells."""

    plan: Plan
    lock_path: Path
    lock: Lock | None
    stamps: Stamps
    freshness: Freshness
    gpu: Gpu | None
    gpu_missing: str | None
    """Why cells that need a GPU cannot be built here; None when they can (or there are none)."""
    removed: tuple[str, ...]
    """Lock entries of cells this run no longer owns: they leave the lock after a full run."""
    shard: str | None = None
    """`K/N` for `--shard`: the lock then holds only this shard's cells."""
    lock_signature: FileStat | None = None
    """The lockfile's stat as read; None when there was none. Every lock write renames a new
    file onto it, so a rewrite changes the inode even within one mtime tick."""
    chosen: tuple[Cell, ...] = ()
    """The cells the run's patterns name (all when none), buildable or not."""
    cluster: bool = False
    """GPU cells go to a Dask cluster, which routes them to its GPU workers: this host's
    GPU does not matter."""

    def still_current(self) -> bool:
        """Whether the lockfile is as this survey read it: every build rewrites the lock, so
        then no other run built anything since, and the survey need not be made again."""
        return file_stat(self.lock_path) == self.lock_signature

    def buildable_here(self, state: CellState) -> bool:
        if not state.cell.needs_gpu:
            return True
        if self.cluster:
            return not state.cell.target.current
        return self.gpu is not None

    def why_skipped(self, state: CellState) -> str:
        """Why a stale cell this run cannot build is skipped."""
        if self.cluster and state.cell.target.current:
            return CURRENT_ON_CLUSTER
        return f"needs a GPU: {self.gpu_missing}"

    @property
    def to_build(self) -> tuple[CellState, ...]:
        return tuple(s for s in self.freshness.stale if self.buildable_here(s))

    @property
    def skipped(self) -> tuple[CellState, ...]:
        return tuple(s for s in self.freshness.stale if not self.buildable_here(s))


@dataclass(frozen=True)
class Scope:
    """Which cells a run answers for: named ones (ids, model names, globs), one CI shard's,
    one pool's, or all."""

    patterns: tuple[str, ...] = ()
    shard: str | None = None
    pool: str | None = None
    shard_strategy: str = "balanced"


def survey(
    manifest: Path,
    scope: Scope = Scope(),
    *,
    verify: bool = False,
    force: bool = False,
    device: int | None = None,
    lock_output: str | None = None,
    cluster: bool = False,
) -> Survey:
    patterns = scope.patterns
    plan = load_plan(manifest)
    chosen = select_cells(plan, patterns)
    gpu, gpu_missing = None, None
    if any(cell.needs_gpu for cell in chosen) and not cluster:
        gpu, gpu_missing = find_gpu(device)
        if gpu is not None and any(cell.target.current for cell in plan.cells):
            plan = replan(plan, gpu)
            chosen = select_cells(plan, patterns)
    lock_path = Path(os.path.abspath(lock_output or plan.manifest.lock_path))
    stamps = Stamps.load(plan.manifest.output.resolve())
    signature = file_stat(lock_path)
    lock = read_known_lock(lock_path, signature, stamps)
    owned, shard = owned_cells(scope, plan)
    buildable = [cell for cell in chosen if cell.id in owned]
    fresh = check(plan, buildable, lock, lock_path, stamps, gpu=gpu, verify=verify, force=force)
    removed = tuple(sorted(set(lock.engines) - owned)) if lock and not patterns else ()
    return Survey(
        plan, lock_path, lock, stamps, fresh, gpu, gpu_missing, removed, shard, signature,
        tuple(chosen), cluster,
    )


def read_known_lock(path: Path, stat: FileStat | None, stamps: Stamps) -> Lock | None:
    """The lock at `path`, whose stat was `stat` just before: as this machine parsed it
    before (`matrix.lockfile.cache`), else read and checked against the schema, unless its
    stamp says this machine wrote or checked it (then stamped, and remembered, for next time).
    """
    if stat is not None:
        known = lock_cache.load(path, stat)
        if known is not None:
            return known
    read_at = time.time_ns()
    trusted = stat is not None and stamps.unchanged(path, stat) is not None
    lock = read_lock(path, validate=not trusted)
    if lock is not None and stat is not None:
        if not trusted:
            stamps.record(path, "", stat)
        lock_cache.store(path, stat, lock, read_at)
    return lock


def owned_cells(scope: Scope, plan: Plan) -> tuple[set[str], str | None]:
    """Ids of the buildable cells this run answers for (all, or one shard's), and the shard."""
    shard, pool = scope.shard, scope.pool
    if shard is None and pool is None:
        return {cell.id for cell in plan.buildable}, None
    from matrix.ci.sharding import cells_in_pool, parse_shard, shard_of_plan

    if shard is None:
        return {cell.id for cell in cells_in_pool(plan.buildable, pool)}, None
    committed = read_lock(plan.manifest.lock_path)  # balances shards by recorded build times
    cells = shard_of_plan(plan, shard, scope.shard_strategy, pool, committed)
    k, n = parse_shard(shard)
    return {cell.id for cell in cells}, f"{k}/{n}"


def select_cells(plan: Plan, patterns: Sequence[str]) -> list[Cell]:
    """Cells named by id, model name or glob; every cell when no pattern is given."""
    if not patterns:
        return list(plan.cells)
    chosen: list[Cell] = []
    for pattern in patterns:
        matched = [
            cell
            for cell in plan.cells
            if pattern in (cell.id, cell.model.name) or fnmatch.fnmatchcase(cell.id, pattern)
        ]
        if not matched:
            raise InputError(f"no cell matches {pattern!r} (give a cell id, model name or glob)")
        chosen.extend(cell for cell in matched if cell not in chosen)
    return chosen


def find_gpu(device: int | None) -> tuple[Gpu | None, str | None]:
    from matrix.gpu import discover, gpu_skip_reason

    inventory = discover()
    reason = gpu_skip_reason(inventory, device)
    if reason is not None:
        return None, reason
    return inventory.pick(device), None


def replan(plan: Plan, gpu: Gpu) -> Plan:
    """The plan again, with `current` cells judged for this GPU's CC."""
    from matrix.plan.planner import make_plan
    from matrix.plan.rules import rules_for

    return make_plan(plan.manifest, plan.facts, rules_for(installed_tensorrt_rtx()), current=gpu.cc)
