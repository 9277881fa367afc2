from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from matrix.ci.sharding import (
    assign_shards,
    cells_in_pool,
    expected_seconds,
    parse_shard,
    select_shard,
)
from matrix.errors import UsageError
from matrix.facts.types import ModelFacts
from matrix.lockfile.types import Lock, LockEntry, ModelRef, PlanIdentity
from matrix.manifest.types import Model, Target
from matrix.plan.capabilities import SM86
from matrix.plan.types import Cell, Verdict


def make_cell(model: str, target: str = "sm86", verdict: Verdict = Verdict.BUILD) -> Cell:
    needs_gpu = verdict is Verdict.NEEDS_GPU
    return Cell(
        id=f"{model}@{target}" + ("+weightless" if needs_gpu else ""),
        model=Model(name=model, onnx=Path(f"/m/{model}.onnx"), onnx_rel=f"{model}.onnx",
                    targets=(Target(target, (SM86,)),)),
        target=Target(target, (SM86,)),
        weightless=needs_gpu,
        verdict=verdict,
        reasons=(),
        runs_on=("sm86",),
        needs_gpu=needs_gpu,
    )


def make_facts(name: str, size: int) -> ModelFacts:
    return ModelFacts(path=f"/m/{name}.onnx", dtypes=frozenset({"fp16"}), nodes=(),
                      inputs=(), outputs=(), digest="d", graph_digest="g", weights_digest="w",
                      size=size)


def make_lock(seconds: dict[str, float]) -> Lock:
    ref = ModelRef(name="m", path="m.onnx", digest="d", graph_digest="g", weights_digest="w")
    engines = {
        cell_id: LockEntry(path=f"engines/{cell_id}.engine", sha256="0" * 64, size=1, model=ref,
                           targets=("sm86",), resolved_targets=("sm86",), runs_on=("sm86",),
                           weightless=False, options={}, fingerprint="f", build_seconds=s,
                           built_at="2025-01-01T00:00:00Z", header_mask=4)
        for cell_id, s in seconds.items()
    }
    return Lock(tool="0.1.0", tensorrt_rtx="1.7.1.116", manifest="m.yaml",
                plan=PlanIdentity(digest="p", cells=tuple(sorted(seconds))),
                engines=MappingProxyType(engines))


def test_parse_shard_accepts_k_of_n() -> None:
    assert parse_shard("2/3") == (2, 3)
    assert parse_shard(" 1 / 1 ") == (1, 1)


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", "", "1/2/3"])
def test_parse_shard_rejects_bad_text_with_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def test_balanced_puts_longest_first_on_least_loaded_shard_using_lock_times() -> None:
    cells = [make_cell(name) for name in "abcde"]
    lock = make_lock({"a@sm86": 5.0, "b@sm86": 4.0, "c@sm86": 3.0, "d@sm86": 2.0, "e@sm86": 2.0})
    # LPT: a->1, b->2, c->2 (4<5), d->1 (5<7), e->1 (7==7: lower index wins).
    assert assign_shards(cells, 2, previous=lock) == (
        ("a@sm86", "d@sm86", "e@sm86"),
        ("b@sm86", "c@sm86"),
    )


def test_balanced_falls_back_to_model_size_and_is_monotone() -> None:
    cells = [make_cell("small"), make_cell("big"), make_cell("mid")]
    facts = {"small": make_facts("small", 10), "big": make_facts("big", 10**9),
             "mid": make_facts("mid", 10**8)}
    times = [expected_seconds(c, None, facts) for c in cells]
    assert times[0] < times[2] < times[1]
    # The big model alone on one shard, the other two together.
    assert assign_shards(cells, 2, facts=facts) == (("big@sm86",), ("mid@sm86", "small@sm86"))


def test_lock_time_wins_over_size_estimate() -> None:
    cell = make_cell("big")
    facts = {"big": make_facts("big", 10**9)}
    assert expected_seconds(cell, make_lock({"big@sm86": 0.3}), facts) == 0.3


def test_assignment_is_independent_of_cell_order_and_covers_every_cell_once() -> None:
    cells = [make_cell(f"m{i:02d}") for i in range(23)]
    lock = make_lock({c.id: 1.0 + (i % 4) for i, c in enumerate(cells)})
    for strategy in ("balanced", "hash"):
        forward = assign_shards(cells, 4, strategy, previous=lock)
        backward = assign_shards(list(reversed(cells)), 4, strategy, previous=lock)
        assert forward == backward
        flat = [cell_id for shard in forward for cell_id in shard]
        assert sorted(flat) == sorted(c.id for c in cells)


def test_hash_strategy_keeps_a_cell_on_its_shard_when_others_change() -> None:
    cells = [make_cell(f"m{i}") for i in range(12)]
    before = assign_shards(cells, 3, "hash")
    after = assign_shards([*cells, make_cell("new")], 3, "hash")
    for k in range(3):
        assert set(before[k]) <= set(after[k])


def test_only_buildable_cells_are_assigned_and_pools_split() -> None:
    cells = [make_cell("a"), make_cell("b", verdict=Verdict.NEEDS_GPU),
             make_cell("c", verdict=Verdict.REJECTED), make_cell("d", verdict=Verdict.EXCLUDED)]
    assert assign_shards(cells, 1) == (("a@sm86", "b@sm86+weightless"),)
    assert [c.id for c in cells_in_pool(cells, "cpu")] == ["a@sm86"]
    assert [c.id for c in cells_in_pool(cells, "gpu")] == ["b@sm86+weightless"]


def test_select_shard_returns_cells_of_that_shard_in_plan_order() -> None:
    cells = [make_cell(name) for name in "zyx"]
    chosen = [select_shard(cells, k, 3) for k in (1, 2, 3)]
    assert all(len(shard) == 1 for shard in chosen)
    assert {shard[0].id for shard in chosen} == {"x@sm86", "y@sm86", "z@sm86"}
    assert select_shard(cells, 1, 1) == tuple(cells)


def test_more_shards_than_cells_leaves_empty_shards() -> None:
    assert assign_shards([make_cell("a")], 3) == (("a@sm86",), (), ())


def test_unknown_strategy_and_bad_k_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="strategy"):
        assign_shards([make_cell("a")], 2, "random")
    with pytest.raises(UsageError):
        select_shard([make_cell("a")], 3, 2)


def test_shard_of_plan_splits_one_pool_by_k_of_n() -> None:
    from matrix.ci.sharding import shard_of_plan
    from matrix.manifest.types import Manifest
    from matrix.plan.types import Plan

    cells = (make_cell("a"), make_cell("b"), make_cell("c"),
             make_cell("g", verdict=Verdict.NEEDS_GPU), make_cell("r", verdict=Verdict.REJECTED))
    manifest = Manifest(path=Path("/m/x.yaml"), output=Path("/m/engines"), output_rel="engines",
                        targets=(), models=())
    plan = Plan(manifest=manifest, cells=cells, facts={}, tensorrt_rtx="1.7.1.116")
    cpu = [shard_of_plan(plan, f"{k}/2", pool="cpu") for k in (1, 2)]
    assert sorted(c.id for shard in cpu for c in shard) == ["a@sm86", "b@sm86", "c@sm86"]
    assert [c.id for c in shard_of_plan(plan, "1/1", pool="gpu")] == ["g@sm86+weightless"]
    assert len(shard_of_plan(plan, "1/1")) == 4
    with pytest.raises(UsageError):
        shard_of_plan(plan, "3/2")
