from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from types import MappingProxyType

import pytest

from matrix.cli import main
from matrix.lockfile.io import read_lock, write_lock
from matrix.lockfile.types import Lock, LockEntry, ModelRef, PlanIdentity

PLAN_CELLS = ("a@sm86", "b@sm86", "c@default", "d@sm89")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def entry(cell: str, engine: str = "", seconds: float = 0.5) -> LockEntry:
    model = cell.split("@")[0]
    return LockEntry(
        path=f"engines/{cell}.engine",
        sha256=digest(engine or cell),
        size=100,
        model=ModelRef(name=model, path=f"models/{model}.onnx", digest=digest(model),
                       graph_digest=digest("g" + model), weights_digest=digest("w" + model)),
        targets=("sm86",),
        resolved_targets=("sm86",),
        runs_on=("sm86",),
        weightless=False,
        options={"optimization_level": 3},
        fingerprint=digest("f" + cell),
        build_seconds=seconds,
        built_at="2025-01-01T00:00:00Z",
        header_mask=4,
    )


def shard_lock(*entries: LockEntry | tuple[str, LockEntry], shard: str | None = "1/2",
               plan: str = "plan", trt: str = "1.7.1.116") -> Lock:
    engines = {}
    for item in entries:
        cell, value = item if isinstance(item, tuple) else (item.path[8:-7], item)
        engines[cell] = value
    return Lock(tool="0.1.0", tensorrt_rtx=trt, manifest="rtx-matrix.yaml",
                plan=PlanIdentity(digest=digest(plan), cells=PLAN_CELLS),
                engines=MappingProxyType(engines), shard=shard)


def write(path: Path, lock: Lock) -> Path:
    write_lock(path, lock)
    return path


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    return [
        write(tmp_path / "s1.lock", shard_lock(entry("a@sm86"), entry("b@sm86"), shard="1/3")),
        write(tmp_path / "s2.lock", shard_lock(entry("c@default"), shard="2/3")),
        write(tmp_path / "s3.lock", shard_lock(entry("d@sm89"), shard="3/3")),
    ]


def merge(*args: str | Path) -> int:
    return main(["lock", "merge", *map(str, args)])


def test_merge_unions_all_shards_and_drops_shard(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rtx-matrix.lock"
    assert merge(*shards, "-o", out) == 0
    merged = read_lock(out)
    assert merged is not None
    assert sorted(merged.engines) == sorted(PLAN_CELLS)
    assert merged.shard is None
    assert "shard" not in out.read_text()
    assert merged.engines["c@default"] == entry("c@default")


def test_merge_is_order_independent_byte_for_byte(shards: list[Path], tmp_path: Path) -> None:
    outputs = set()
    for i, order in enumerate(itertools.permutations(shards)):
        out = tmp_path / f"merged{i}.lock"
        assert merge(*order, "-o", out, "-q") == 0
        outputs.add(out.read_bytes())
    assert len(outputs) == 1


def test_merge_is_idempotent(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rtx-matrix.lock"
    assert merge(*shards, "-o", out) == 0
    first = out.read_bytes()
    assert merge(out, shards[1], "-o", out) == 0
    assert out.read_bytes() == first
    assert merge(out, *shards, "-o", out) == 0
    assert out.read_bytes() == first


def test_same_engine_twice_is_fine_and_the_choice_ignores_order(tmp_path: Path) -> None:
    slow = write(tmp_path / "x.lock", shard_lock(entry("a@sm86", seconds=9.0)))
    fast = write(tmp_path / "y.lock", shard_lock(entry("a@sm86", seconds=1.0)))
    out1, out2 = tmp_path / "m1.lock", tmp_path / "m2.lock"
    assert merge(slow, fast, "-o", out1, "--allow-partial") == 0
    assert merge(fast, slow, "-o", out2, "--allow-partial") == 0
    assert out1.read_bytes() == out2.read_bytes()


def test_different_engines_for_a_cell_name_the_cell_and_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write(tmp_path / "one.lock", shard_lock(entry("a@sm86", engine="x")))
    two = write(tmp_path / "two.lock", shard_lock(entry("a@sm86", engine="y")))
    out = tmp_path / "out.lock"
    assert merge(one, two, "-o", out, "--allow-partial") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {two}: a@sm86: engine {digest('y')[:12]} differs from {digest('x')[:12]} "
        f"in {one} (choose one with --on-conflict first|last)"
    ]
    assert not out.exists()


@pytest.mark.parametrize(("policy", "winner"), [("first", "x"), ("last", "y")])
def test_on_conflict_picks_by_argument_order(tmp_path: Path, policy: str, winner: str) -> None:
    one = write(tmp_path / "one.lock", shard_lock(entry("a@sm86", engine="x")))
    two = write(tmp_path / "two.lock", shard_lock(entry("a@sm86", engine="y")))
    out = tmp_path / "out.lock"
    assert merge(one, two, "-o", out, "--allow-partial", "--on-conflict", policy) == 0
    merged = read_lock(out)
    assert merged is not None
    assert merged.engines["a@sm86"].sha256 == digest(winner)


def test_a_lock_from_another_plan_is_named(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = write(tmp_path / "odd.lock", shard_lock(entry("d@sm89"), plan="other"))
    out = tmp_path / "out.lock"
    assert merge(shards[0], odd, shards[1], "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {odd}: comes from a different plan")
    assert not out.exists()


def test_a_lock_from_another_library_version_is_named(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = write(tmp_path / "odd.lock", shard_lock(entry("d@sm89"), trt="1.8.0.1"))
    assert merge(odd, shards[0], shards[1], "-o", tmp_path / "out.lock") == 2
    err = capsys.readouterr().err
    assert f"error: {odd}: built with TensorRT-RTX 1.8.0.1, but {shards[0]} with 1.7.1.116" in err


def test_cells_no_shard_built_are_listed_unless_partial_is_allowed(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.lock"
    assert merge(shards[0], "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: c@default: in the plan, but no input lock built it "
        "(pass --allow-partial to merge anyway)",
        "error: d@sm89: in the plan, but no input lock built it "
        "(pass --allow-partial to merge anyway)",
    ]
    assert not out.exists()
    assert merge(shards[0], "-o", out, "--allow-partial") == 0
    merged = read_lock(out)
    assert merged is not None and sorted(merged.engines) == ["a@sm86", "b@sm86"]


def test_paths_are_rebased_to_the_output_folder(tmp_path: Path) -> None:
    (tmp_path / "artifacts" / "cpu-1").mkdir(parents=True)
    shard = write(tmp_path / "artifacts" / "cpu-1" / "shard.lock",
                  shard_lock(entry("a@sm86"), shard="1/1"))
    out = tmp_path / "repo" / "rtx-matrix.lock"
    assert merge(shard, "-o", out, "--allow-partial") == 0
    merged = read_lock(out)
    assert merged is not None
    got = merged.engines["a@sm86"]
    assert got.path == "../artifacts/cpu-1/engines/a@sm86.engine"
    assert got.model.path == "../artifacts/cpu-1/models/a.onnx"
    assert merged.manifest == "../artifacts/cpu-1/rtx-matrix.yaml"
    assert (out.parent / got.path).resolve() == (shard.parent / "engines/a@sm86.engine").resolve()


def test_missing_or_broken_input_is_a_clean_error(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.lock"
    broken.write_text("{not json")
    assert merge(shards[0], tmp_path / "nope.lock", "-o", tmp_path / "o.lock") == 2
    assert f"error: {tmp_path / 'nope.lock'}: no such lockfile" in capsys.readouterr().err
    assert merge(shards[0], broken, "-o", tmp_path / "o.lock") == 2
    assert f"error: {broken}: bad lockfile: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o.lock").exists()


# --- end to end: shards 1/3..3/3 merged equal one unsharded build ---------------------------

SHARD_MANIFEST = """\
version: 1
output: engines
models:
  - {name: m1, onnx: models/m1.onnx, targets: [default, sm86]}
  - {name: m2, onnx: models/m2.onnx, targets: [sm86, sm89]}
  - {name: m3, onnx: models/m3.onnx, targets: [default]}
"""


def build_knows_shards() -> bool:
    import argparse

    from matrix.cli import make_parser

    commands = next(a for a in make_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    return "--shard" in commands.choices["build"]._option_string_actions


def shard_project(root: Path) -> Path:
    from tests import modelgen

    for seed, name in enumerate(("m1", "m2", "m3")):
        # fp16 MatMul: the same model builds to the same bytes, so engines compare by sha256.
        modelgen.matmul_fp16(root / "models" / f"{name}.onnx", seed=seed)
    manifest = root / "rtx-matrix.yaml"
    manifest.write_text(SHARD_MANIFEST)
    return manifest


def comparable(lock: Lock) -> dict[str, dict[str, object]]:
    from matrix.lockfile.io import entry_to_dict
    from matrix.lockfile.types import VOLATILE_FIELDS

    return {cell: {k: v for k, v in entry_to_dict(e).items() if k not in VOLATILE_FIELDS}
            for cell, e in lock.engines.items()}


@pytest.mark.slow
def test_three_shards_merged_equal_one_unsharded_build(tmp_path: Path) -> None:
    if not build_knows_shards():
        pytest.skip("`build --shard` is not wired into the build command yet")
    whole = shard_project(tmp_path / "whole")
    assert main(["build", "-j2", "-q", str(whole)]) == 0
    sharded = shard_project(tmp_path / "sharded")
    shard_locks = []
    for k in (1, 2, 3):
        out = tmp_path / "sharded" / f"shard-{k}.lock"
        assert main(["build", "-j2", "-q", "--shard", f"{k}/3", "-o", str(out),
                     str(sharded)]) == 0
        shard_locks.append(out)
    cells_per_shard = [set(read_lock(p).engines) for p in shard_locks]  # type: ignore[union-attr]
    assert all(cells_per_shard) and sum(map(len, cells_per_shard)) == 5  # a partition
    merged_path = tmp_path / "sharded" / "rtx-matrix.lock"
    assert merge(*shard_locks, "-o", merged_path) == 0
    merged, expected = read_lock(merged_path), read_lock(whole.with_suffix(".lock"))
    assert merged is not None and expected is not None
    assert sorted(merged.engines) == sorted(expected.engines) == sorted(expected.plan.cells)
    assert merged.plan == expected.plan
    assert comparable(merged) == comparable(expected)
    for entry in merged.engines.values():
        engine = merged_path.parent / entry.path
        assert hashlib.sha256(engine.read_bytes()).hexdigest() == entry.sha256
