from __future__ import annotations

import json
from pathlib import Path

from matrix.ci.github_matrix import GITHUB_MAX_JOBS, github_matrix
from matrix.ci.sharding import cells_in_pool, select_shard
from matrix.manifest.types import Manifest
from matrix.plan.types import Plan, Verdict
from tests.ci.test_sharding import make_cell


def make_plan(cpu: int, gpu: int, rejected: int = 0) -> Plan:
    cells = (
        [make_cell(f"c{i:03d}") for i in range(cpu)]
        + [make_cell(f"g{i:03d}", verdict=Verdict.NEEDS_GPU) for i in range(gpu)]
        + [make_cell(f"r{i:03d}", verdict=Verdict.REJECTED) for i in range(rejected)]
    )
    manifest = Manifest(path=Path("/m/rtx-matrix.yaml"), output=Path("/m/engines"),
                        output_rel="engines", targets=(), models=())
    return Plan(manifest=manifest, cells=tuple(cells), facts={}, tensorrt_rtx="1.7.1.116")


def test_one_entry_per_shard_with_separate_pools() -> None:
    notes: list[str] = []
    matrix = github_matrix(make_plan(cpu=10, gpu=3, rejected=2), 4, 2, warn=notes.append)
    entries = matrix["include"]
    assert [(e["pool"], e["shard"]) for e in entries] == [
        ("cpu", "1/4"), ("cpu", "2/4"), ("cpu", "3/4"), ("cpu", "4/4"),
        ("gpu", "1/2"), ("gpu", "2/2"),
    ]
    assert sum(e["cells"] for e in entries if e["pool"] == "cpu") == 10
    assert sum(e["cells"] for e in entries if e["pool"] == "gpu") == 3
    assert len({e["name"] for e in entries}) == len(entries)
    assert all(e["runs-on"] for e in entries)
    assert notes == []
    json.dumps(matrix)  # GitHub reads it as JSON


def test_no_gpu_entries_when_plan_has_no_gpu_cells() -> None:
    entries = github_matrix(make_plan(cpu=5, gpu=0), 2, 3)["include"]
    assert {e["pool"] for e in entries} == {"cpu"}


def test_fewer_cells_than_shards_gives_fewer_shards_never_empty_ones() -> None:
    entries = github_matrix(make_plan(cpu=2, gpu=1), 8, 4)["include"]
    assert [(e["pool"], e["shard"], e["cells"]) for e in entries] == [
        ("cpu", "1/2", 1), ("cpu", "2/2", 1), ("gpu", "1/1", 1)
    ]


def test_matrix_is_clamped_to_githubs_job_limit_and_says_so() -> None:
    notes: list[str] = []
    entries = github_matrix(make_plan(cpu=400, gpu=100), 400, 100, warn=notes.append)["include"]
    assert len(entries) == GITHUB_MAX_JOBS
    pools = [e["pool"] for e in entries]
    assert pools.count("gpu") == 51 and pools.count("cpu") == 205
    assert len(notes) == 1 and "256" in notes[0]


def test_cell_counts_match_what_build_shard_selects() -> None:
    plan = make_plan(cpu=9, gpu=0)
    for entry in github_matrix(plan, 4, 0)["include"]:
        k, n = (int(x) for x in entry["shard"].split("/"))
        assert len(select_shard(cells_in_pool(plan.cells, "cpu"), k, n)) == entry["cells"]


def test_hash_strategy_skips_shards_it_leaves_empty() -> None:
    entries = github_matrix(make_plan(cpu=3, gpu=0), 3, 0, strategy="hash")["include"]
    assert all(e["cells"] > 0 for e in entries)
    assert sum(e["cells"] for e in entries) == 3


def test_json_form_is_one_line_for_github_output() -> None:
    from matrix.ci.github_matrix import github_matrix_json

    text = github_matrix_json(make_plan(cpu=3, gpu=1), 2, 1)
    assert "\n" not in text
    assert json.loads(text) == github_matrix(make_plan(cpu=3, gpu=1), 2, 1)
