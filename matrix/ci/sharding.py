"""Split the buildable cells of a plan into N deterministic shards (CI jobs, `--shard K/N`).

Every shard computes the whole assignment itself and keeps its share, so the assignment must
depend only on inputs every shard sees identically: the cells, the committed lock and the
ONNX facts. Nothing here builds or writes.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Mapping, Sequence

from matrix.errors import UsageError
from matrix.facts.types import ModelFacts
from matrix.lockfile.types import Lock
from matrix.plan.types import Cell, Plan, Verdict

STRATEGIES = ("balanced", "hash")
POOLS = ("cpu", "gpu")

# Expected seconds for a cell with no recorded time: a fixed start-up cost plus one second per
# 25 MB of model. Builds of the small models we measured take 0.05-2 s; what matters for
# balancing is only that bigger models sort as slower, so any monotone formula would do.
BASE_SECONDS = 0.2
BYTES_PER_SECOND = 25_000_000
UNKNOWN_SECONDS = 1.0

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/3"` -> (2, 3). K is 1-based; raises UsageError for anything else."""
    match = _SHARD.match(text)
    if not match:
        raise UsageError(f"--shard {text!r}: write it as K/N, e.g. 2/3")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {text!r}: K must be between 1 and N, and N at least 1")
    return k, n


def pool_of(cell: Cell) -> str:
    """`gpu` for cells that need a GPU to build (weightless, `current`), else `cpu`."""
    return "gpu" if cell.needs_gpu or cell.verdict is Verdict.NEEDS_GPU else "cpu"


def cells_in_pool(cells: Sequence[Cell], pool: str | None) -> tuple[Cell, ...]:
    """The buildable cells of one pool (None: both pools together)."""
    if pool is not None and pool not in POOLS:
        raise UsageError(f"unknown pool {pool!r}: choose one of {', '.join(POOLS)}")
    return tuple(c for c in cells if c.buildable and (pool is None or pool_of(c) == pool))


def expected_seconds(
    cell: Cell, previous: Lock | None, facts: Mapping[str, ModelFacts] | None
) -> float:
    """What the cell took last time per the committed lock, else an estimate from model size."""
    if previous is not None:
        entry = previous.engines.get(cell.id)
        if entry is not None and entry.build_seconds > 0:
            return float(entry.build_seconds)
    model_facts = facts.get(cell.model.name) if facts is not None else None
    if model_facts is None:
        return UNKNOWN_SECONDS
    return BASE_SECONDS + model_facts.size / BYTES_PER_SECOND


def assign_shards(
    cells: Sequence[Cell],
    n: int,
    strategy: str = "balanced",
    previous: Lock | None = None,
    facts: Mapping[str, ModelFacts] | None = None,
) -> tuple[tuple[str, ...], ...]:
    """Cell ids of each of the N shards (index 0 is shard 1/N), ids sorted within a shard.

    Only buildable cells are assigned; pass one pool's cells (`cells_in_pool`) to shard CPU and
    GPU cells separately. A shard may be empty when there are fewer cells than shards.
    """
    if n < 1:
        raise UsageError(f"cannot split into {n} shards: N must be at least 1")
    buildable = sorted((c for c in cells if c.buildable), key=lambda c: c.id)
    if strategy == "balanced":
        return _longest_first(buildable, n, previous, facts)
    if strategy == "hash":
        return _by_hash(buildable, n)
    raise UsageError(f"unknown shard strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")


def select_shard(
    cells: Sequence[Cell],
    k: int,
    n: int,
    strategy: str = "balanced",
    previous: Lock | None = None,
    facts: Mapping[str, ModelFacts] | None = None,
) -> tuple[Cell, ...]:
    """The buildable cells of shard K of N (1-based), in the order `cells` gives them."""
    if not 1 <= k <= n:
        raise UsageError(f"shard {k}/{n}: K must be between 1 and N")
    chosen = set(assign_shards(cells, n, strategy, previous, facts)[k - 1])
    return tuple(c for c in cells if c.id in chosen)


def shard_of_plan(
    plan: Plan,
    shard: str,
    strategy: str = "balanced",
    pool: str | None = None,
    previous: Lock | None = None,
) -> tuple[Cell, ...]:
    """`build --shard K/N [--pool P] [--shard-strategy S]`: the cells this shard owns.

    Computed over every buildable cell of the pool, stale or not, so all shards agree; the
    caller then builds the stale ones and writes a lock holding only these cells.
    """
    k, n = parse_shard(shard)
    return select_shard(cells_in_pool(plan.cells, pool), k, n, strategy, previous, plan.facts)


def _longest_first(
    cells: Sequence[Cell],
    n: int,
    previous: Lock | None,
    facts: Mapping[str, ModelFacts] | None,
) -> tuple[tuple[str, ...], ...]:
    # LPT scheduling: longest job onto the least-loaded shard. Ties in time go by cell id and
    # ties in load by shard index, so every shard computes the same answer.
    timed = sorted(((expected_seconds(c, previous, facts), c.id) for c in cells),
                   key=lambda t: (-t[0], t[1]))
    loads = [(0.0, index) for index in range(n)]
    shards: list[list[str]] = [[] for _ in range(n)]
    for seconds, cell_id in timed:
        load, index = heapq.heappop(loads)
        shards[index].append(cell_id)
        heapq.heappush(loads, (load + seconds, index))
    return tuple(tuple(sorted(ids)) for ids in shards)


def _by_hash(cells: Sequence[Cell], n: int) -> tuple[tuple[str, ...], ...]:
    shards: list[list[str]] = [[] for _ in range(n)]
    for cell in cells:
        shards[stable_hash(cell.id) % n].append(cell.id)
    return tuple(tuple(ids) for ids in shards)


def stable_hash(text: str) -> int:
    """Same value in every process and Python version (unlike `hash`, which is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
