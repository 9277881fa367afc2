"""The lockfile as frozen objects. Reading and writing lives in `matrix.lockfile.io`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

LOCK_VERSION = 1
VOLATILE_FIELDS = ("build_seconds", "built_at", "source", "peak_rss_bytes")
"""Entry fields that differ between two builds of the same inputs even when engines match."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: str
    """ONNX path relative to the lockfile's folder, POSIX separators."""
    digest: str
    """`ModelFacts.digest`: model file and external data."""
    graph_digest: str
    weights_digest: str


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine, as the built network declares it."""

    name: str
    mode: str
    """`input` or `output`."""
    dtype: str
    """Canonical names as in `matrix.facts.types` (fp32, fp16, ...); other types lower-case
    as the library names them (int32, int64, bool, uint8)."""
    shape: tuple[int, ...]
    """-1 for a dimension an optimization profile decides."""


@dataclass(frozen=True)
class LockEntry:
    path: str
    """Engine path relative to the lockfile's folder, POSIX separators."""
    sha256: str
    size: int
    model: ModelRef
    targets: tuple[str, ...]
    """As asked, canonical: () default, ("current",), ("sm80", "sm86")."""
    resolved_targets: tuple[str, ...]
    """What the builder was given: `current` replaced by the GPU's CC."""
    runs_on: tuple[str, ...]
    weightless: bool
    options: Mapping[str, Any]
    """Builder options and optimization profiles, JSON-able."""
    fingerprint: str
    build_seconds: float
    built_at: str
    """ISO-8601 UTC."""
    header_mask: int
    gpu: str | None = None
    """Name of the GPU a GPU build ran on."""
    io: tuple[TensorSpec, ...] = ()
    """Engine facts, as the library reports them while building on any host (see
    docs/tensorrt-rtx.md): the network's I/O tensors; () in locks written before they were
    recorded."""
    weights_bytes: int | None = None
    """The builder's "Total Weights Memory" report (the weights the engine holds when full)."""
    stripped_weights_bytes: int | None = None
    """Weightless engines: the bytes of weights refit puts back (`EngineStat.
    STRIPPED_WEIGHTS_SIZE`, readable only where the engine deserializes: a GPU it runs on)."""
    peak_rss_bytes: int | None = None
    """The build's peak resident memory (the worker process's), the next build's expected
    need; None when it could not be measured."""
    source: str = "built"
    """Where the engine came from: `built` here, or the engine cache's URL (no credentials)."""


@dataclass(frozen=True)
class PlanIdentity:
    """Identifies the plan a lock came from (its `plan` key), so shard locks can be checked
    before merging."""

    digest: str
    """sha256 over the sorted (cell id, fingerprint) pairs of every buildable cell."""
    cells: tuple[str, ...]
    """Ids of every cell the plan says to build (verdict build or needs-gpu), sorted."""


@dataclass(frozen=True)
class Lock:
    tool: str
    """rtx-matrix version that wrote it."""
    tensorrt_rtx: str
    manifest: str
    """Manifest path relative to the lockfile's folder."""
    plan: PlanIdentity
    engines: Mapping[str, LockEntry] = field(default_factory=lambda: MappingProxyType({}))
    shard: str | None = None
    """`K/N` when written by `build --shard`."""
    version: int = LOCK_VERSION
