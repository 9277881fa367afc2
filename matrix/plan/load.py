"""Manifest path to Plan: the read-only front half that `plan`, `build` and `status` share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kept out of the import: every command's argument parsing imports this
    from matrix.plan.capabilities import CC
    from matrix.plan.types import Plan

DEFAULT_MANIFEST = "rtx-matrix.yaml"


def resolve_manifest(given: str | None) -> Path:
    return Path(given if given else DEFAULT_MANIFEST)


def load_plan(manifest_path: Path, current: CC | None = None) -> Plan:
    """Load, inspect and plan. Raises InputError listing every problem. Writes nothing in
    the project, only to rtx-matrix's cache folder (`matrix.cache_dir`): the facts cache
    (what the ONNX files say), for a manifest that passed the schema check its
    valid-manifest mark (`matrix.manifest.valid_cache`), and the plan itself
    (`matrix.plan.cache`), which an unchanged project loads instead of doing the rest."""
    import time

    from matrix.plan import cache

    if current is None:
        known = cache.load(manifest_path)
        if known is not None:
            return known
    read_at = time.time_ns()
    from matrix.facts.cache import FactsCache
    from matrix.facts.collect import gather_facts
    from matrix.manifest.loader import load_manifest
    from matrix.plan.planner import make_plan
    from matrix.plan.rules import rules_for
    from matrix.versions import installed_tensorrt_rtx

    manifest = load_manifest(manifest_path)
    version = installed_tensorrt_rtx()
    rules = rules_for(version)
    facts = gather_facts(manifest, FactsCache(), tensorrt_rtx=version)
    plan = make_plan(manifest, facts, rules, current=current)
    # A model whose parser check died has no verdict yet: plan it again next time.
    if current is None and all(f.parser is not None for f in facts.values()):
        cache.store(manifest_path, plan, read_at)
    return plan
