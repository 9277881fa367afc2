"""Fingerprints: one digest of every input that decides an engine's bytes.

Two builds with the same fingerprint are interchangeable, so a cell whose fingerprint equals
the lock's (and whose engine is intact) needs no rebuild.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from matrix.facts.types import ModelFacts
from matrix.lockfile.types import PlanIdentity
from matrix.manifest.types import BuilderOptions, Model
from matrix.plan.types import Cell, Plan

FORMAT = 1
"""Bump when what goes into a fingerprint changes: every cell then rebuilds once."""


def build_options(cell: Cell) -> dict[str, Any]:
    """Builder options and optimization profiles of a cell, as the lock records them."""
    return {
        "builder": cell.model.builder.as_dict(),
        "profiles": [profile.as_dict() for profile in cell.model.profiles],
    }


def fingerprint(
    cell: Cell,
    facts: ModelFacts,
    tensorrt_rtx_version: str,
    resolved_targets: Iterable[str],
    options: BuilderOptions | None = None,
) -> str:
    """sha256 of the canonical JSON of what decides the engine bytes: `digest_of` these
    inputs, sorted by key, written out here part by part so that a model's options, shared
    by all its cells, are encoded once rather than for each of 10,000 cells.

        {"format", "gpu_build", "model", "options", "targets", "tensorrt_rtx", "weightless"}

    A weightless engine holds no weights (they come back at refit), so only the graph digest
    counts for it: a weights-only change leaves it valid. `options` overrides the model's
    builder options when the caller merged them with the manifest's itself.
    """
    if options is None:
        recorded = _options_json(cell)
    else:
        recorded = _CANONICAL.encode({**build_options(cell), "builder": options.as_dict()})
    encode = _CANONICAL.encode
    text = (
        f'{{"format":{FORMAT},"gpu_build":{encode(cell.target.current)},'
        f'"model":{encode(facts.graph_digest if cell.weightless else facts.digest)},'
        f'"options":{recorded},"targets":{encode(list(resolved_targets))},'
        f'"tensorrt_rtx":{encode(tensorrt_rtx_version)},"weightless":{encode(cell.weightless)}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
"""`json.dumps` with these arguments, without making an encoder for each of 10,000 cells."""

_OPTIONS: dict[int, tuple[Model, str]] = {}
"""Each model's encoded options, by the id of the model object its cells share (held here,
so that the id cannot be reused while the entry lives)."""


def _options_json(cell: Cell) -> str:
    held = _OPTIONS.get(id(cell.model))
    if held is not None and held[0] is cell.model:
        return held[1]
    if len(_OPTIONS) >= 4096:
        _OPTIONS.clear()
    encoded = _CANONICAL.encode(build_options(cell))
    _OPTIONS[id(cell.model)] = (cell.model, encoded)
    return encoded


def digest_of(value: Any) -> str:
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()


def plan_identity(
    plan: Plan, tensorrt_rtx_version: str, known: Mapping[str, str] | None = None
) -> PlanIdentity:
    """Identifies a plan across machines: shard locks must carry the same identity to merge.

    Covers the buildable cells (verdict build or needs-gpu) and uses the targets as asked
    (`current` unresolved), so hosts with different GPUs, or none, agree on it.
    `known`: fingerprints already computed for cells whose targets need no resolving.
    """
    known = known or {}
    pairs = sorted(
        (cell.id, known.get(cell.id) or planned_fingerprint(cell, plan, tensorrt_rtx_version))
        for cell in plan.buildable
    )
    return PlanIdentity(digest=digest_of(pairs), cells=tuple(cell_id for cell_id, _ in pairs))


def planned_fingerprint(cell: Cell, plan: Plan, tensorrt_rtx_version: str) -> str:
    return fingerprint(cell, plan.facts[cell.model.name], tensorrt_rtx_version, cell.target.spec)
