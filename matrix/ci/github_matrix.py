"""The GitHub Actions job matrix for a sharded build (`rtx-matrix plan --github-matrix`).

One entry per shard, CPU and GPU pools apart: a shard job runs
`rtx-matrix build --pool POOL --shard K/N`, and the GPU pool goes to runners with a GPU.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from matrix.ci.sharding import assign_shards, cells_in_pool
from matrix.lockfile.types import Lock
from matrix.plan.types import Plan

GITHUB_MAX_JOBS = 256
"""GitHub refuses a matrix that expands to more jobs than this."""
CPU_RUNNER: str | list[str] = "ubuntu-latest"
GPU_RUNNER: str | list[str] = ["self-hosted", "gpu"]


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def github_matrix(
    plan: Plan,
    cpu_shards: int,
    gpu_shards: int,
    *,
    previous: Lock | None = None,
    strategy: str = "balanced",
    cpu_runner: str | list[str] = CPU_RUNNER,
    gpu_runner: str | list[str] = GPU_RUNNER,
    warn: Callable[[str], None] = _warn_stderr,
) -> dict[str, Any]:
    """`{"include": [{"shard": "1/4", "pool": "cpu", "cells": 3, "runs-on": ..., "name": ...}]}`.

    A pool gets at most as many shards as it has cells, and none when it has no cells; the
    total stays within GitHub's 256 jobs (clamped, with a warning). Shards are assigned exactly
    as `build --shard` will assign them (same strategy, lock and facts), so `cells` is what
    each job will build; a shard the strategy leaves empty gets no job.
    """
    cpu = cells_in_pool(plan.cells, "cpu")
    gpu = cells_in_pool(plan.cells, "gpu")
    cpu_n, gpu_n = _shard_counts(len(cpu), len(gpu), cpu_shards, gpu_shards, warn)
    include: list[dict[str, Any]] = []
    pools = (("cpu", cpu, cpu_n, cpu_runner), ("gpu", gpu, gpu_n, gpu_runner))
    for pool, cells, n, runner in pools:
        if n == 0:
            continue
        shards = assign_shards(cells, n, strategy, previous, plan.facts)
        for k, ids in enumerate(shards, start=1):
            if ids:
                include.append(_entry(pool, k, n, len(ids), runner))
    return {"include": include}


def github_matrix_json(
    plan: Plan, cpu_shards: int, gpu_shards: int, *, previous: Lock | None = None,
    strategy: str = "balanced",
) -> str:
    """`github_matrix` on one line, as `echo "matrix=..." >> $GITHUB_OUTPUT` needs it."""
    matrix = github_matrix(plan, cpu_shards, gpu_shards, previous=previous, strategy=strategy)
    return json.dumps(matrix, separators=(",", ":"))


def _entry(pool: str, k: int, n: int, cells: int, runner: str | list[str]) -> dict[str, Any]:
    return {
        "shard": f"{k}/{n}",
        "pool": pool,
        "cells": cells,
        "runs-on": runner,
        # Unique per job: artifact names must not collide across the matrix.
        "name": f"{pool}-{k}-of-{n}",
    }


def _shard_counts(
    cpu_cells: int, gpu_cells: int, cpu_shards: int, gpu_shards: int, warn: Callable[[str], None]
) -> tuple[int, int]:
    cpu_n = min(max(cpu_shards, 1), cpu_cells)
    gpu_n = min(max(gpu_shards, 1), gpu_cells)
    if cpu_n + gpu_n <= GITHUB_MAX_JOBS:
        return cpu_n, gpu_n
    # Keep each pool's share of the jobs, but never squeeze a non-empty pool to zero.
    gpu_clamped = max(1, GITHUB_MAX_JOBS * gpu_n // (cpu_n + gpu_n)) if gpu_n else 0
    cpu_clamped = GITHUB_MAX_JOBS - gpu_clamped if cpu_n else 0
    warn(
        f"{cpu_n} CPU + {gpu_n} GPU shards exceed GitHub's limit of {GITHUB_MAX_JOBS} jobs "
        f"per matrix: using {cpu_clamped} CPU + {gpu_clamped} GPU shards"
    )
    return cpu_clamped, gpu_clamped
