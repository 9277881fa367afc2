"""Freshness reasons, on hand-made plans and locks and real files on disk."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from matrix.atomic import sha256_file
from matrix.errors import InputError
from matrix.facts.types import ModelFacts
from matrix.gpu import Gpu
from matrix.lockfile import freshness as F
from matrix.lockfile.fingerprint import build_options, fingerprint
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, LockEntry, ModelRef, PlanIdentity
from matrix.manifest.types import BuilderOptions
from matrix.plan.capabilities import SM86, SM89
from matrix.plan.types import Cell, Plan, Verdict
from tests.factories import facts, manifest, model, target

VERSION = "1.7.1.116"
FACTS = facts()


def make_cell(tgt: str = "sm86", weightless: bool = False) -> Cell:
    t = target(tgt)
    m = model(targets=(t,))
    ident = f"m@{t.name}" + ("+weightless" if weightless else "")
    needs_gpu = weightless or t.current
    verdict = Verdict.NEEDS_GPU if needs_gpu else Verdict.BUILD
    return Cell(ident, m, t, weightless, verdict, (), ("sm86",), needs_gpu)


def make_plan(root: Path, *cells: Cell, facts_: ModelFacts = FACTS) -> Plan:
    man = replace(manifest(cells[0].model), path=root / "m.yaml", output=root / "engines")
    return Plan(man, cells, {"m": facts_}, VERSION)


def locked(
    plan: Plan,
    cell: Cell,
    resolved: tuple[str, ...] = ("sm86",),
    gpu: str | None = None,
    version: str = VERSION,
) -> LockEntry:
    """Writes a fake engine file and the entry a build of it would have produced."""
    engine = F.engine_path(plan.manifest, cell)
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(b"engine:" + cell.id.encode())
    f = FACTS
    return LockEntry(
        path=F.relative_posix(engine, plan.manifest.root),
        sha256=sha256_file(engine),
        size=engine.stat().st_size,
        model=ModelRef("m", "m.onnx", f.digest, f.graph_digest, f.weights_digest),
        targets=cell.target.spec,
        resolved_targets=resolved,
        runs_on=cell.runs_on,
        weightless=cell.weightless,
        options=MappingProxyType(build_options(cell)),
        fingerprint=fingerprint(cell, f, version, resolved),
        build_seconds=0.1,
        built_at="2025-01-01T00:00:00Z",
        header_mask=4,
        gpu=gpu,
    )


def lock_of(entries: dict[str, LockEntry]) -> Lock:
    return Lock("0.1.0", VERSION, "m.yaml", PlanIdentity("e" * 64, ()), MappingProxyType(entries))


def states(
    plan: Plan,
    lock: Lock | None,
    installed: str = VERSION,
    gpu: Gpu | None = None,
    verify: bool = False,
    force: bool = False,
) -> dict[str, F.CellState]:
    stamps = Stamps.load(plan.manifest.output)
    result = F.check(
        plan,
        plan.buildable,
        lock,
        plan.manifest.lock_path,
        stamps,
        installed=installed,
        gpu=gpu,
        verify=verify,
        force=force,
    )
    return {s.cell.id: s for s in result.cells}


def test_new_cell_then_up_to_date(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    assert states(plan, None)["m@sm86"].reasons == (F.NEW_CELL,)
    lock = lock_of({"m@sm86": locked(plan, cell)})
    assert states(plan, lock)["m@sm86"].reasons == ()


def test_input_changes_are_named(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    lock = lock_of({"m@sm86": locked(plan, cell)})
    other_model = make_plan(tmp_path, cell, facts_=replace(FACTS, digest="sha256:" + "9" * 64))
    assert states(other_model, lock)["m@sm86"].reasons == (F.MODEL_CHANGED,)
    assert states(plan, lock, installed="1.8.0.1")["m@sm86"].reasons == (
        f"{F.LIBRARY_CHANGED} (1.7.1.116 -> 1.8.0.1)",
    )
    opt = replace(cell, model=replace(cell.model, builder=BuilderOptions(optimization_level=1)))
    assert states(make_plan(tmp_path, opt), lock)["m@sm86"].reasons == (F.OPTIONS_CHANGED,)
    assert states(plan, lock, force=True)["m@sm86"].reasons == (F.FORCED,)


def test_targets_changed(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    lock = lock_of({"m@sm86": locked(plan, cell, resolved=("sm80",))})
    assert states(plan, lock)["m@sm86"].reasons == (f"{F.TARGETS_CHANGED} (sm80 -> sm86)",)


def test_engine_missing_and_modified(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    lock = lock_of({"m@sm86": locked(plan, cell)})
    engine = F.engine_path(plan.manifest, cell)
    stat = engine.stat()
    engine.write_bytes(b"engine:m@sm8X")  # same size
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert states(plan, lock)["m@sm86"].reasons == (F.ENGINE_MODIFIED,)
    engine.unlink()
    assert states(plan, lock)["m@sm86"].reasons == (F.ENGINE_MISSING,)


def test_stamp_trusted_unless_verify(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    lock = lock_of({"m@sm86": locked(plan, cell)})
    stamps = Stamps.load(plan.manifest.output)
    F.check(plan, plan.buildable, lock, plan.manifest.lock_path, stamps, installed=VERSION)
    stamps.save()  # the first check hashed the engine and stamped it
    engine = F.engine_path(plan.manifest, cell)
    stat = engine.stat()
    engine.write_bytes(b"engine:m@sm8X")
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert states(plan, lock)["m@sm86"].reasons == ()  # same size and mtime: trusted
    assert states(plan, lock, verify=True)["m@sm86"].reasons == (F.ENGINE_MODIFIED,)


def test_weights_only_change_keeps_weightless_cell_fresh(tmp_path: Path) -> None:
    cell = make_cell("sm86", weightless=True)
    plan = make_plan(tmp_path, cell)
    lock = lock_of({cell.id: locked(plan, cell)})
    new_weights = replace(FACTS, digest="sha256:" + "8" * 64, weights_digest="sha256:" + "7" * 64)
    state = states(make_plan(tmp_path, cell, facts_=new_weights), lock)[cell.id]
    assert state.reasons == ()
    assert state.notes == (F.WEIGHTS_ONLY,)
    new_graph = replace(FACTS, graph_digest="sha256:" + "6" * 64)
    assert states(make_plan(tmp_path, cell, facts_=new_graph), lock)[cell.id].reasons == (
        F.MODEL_CHANGED,
    )


def test_current_cell_on_another_gpu(tmp_path: Path) -> None:
    cell = make_cell("current")
    plan = make_plan(tmp_path, cell)
    lock = lock_of({cell.id: locked(plan, cell, resolved=("sm86",), gpu="RTX 3080")})
    gpu86 = Gpu(0, "RTX 3080", SM86, 1)
    assert states(plan, lock, gpu=gpu86)[cell.id].reasons == ()
    assert states(plan, lock, gpu=replace(gpu86, name="RTX A4000"))[cell.id].reasons == (
        f"{F.GPU_CHANGED} (RTX 3080 -> RTX A4000)",
    )
    gpu89 = Gpu(0, "RTX 4090", SM89, 1)
    assert states(plan, lock, gpu=gpu89)[cell.id].reasons == (
        f"{F.GPU_CHANGED} (RTX 3080 -> RTX 4090)",
        f"{F.GPU_CHANGED} (sm86 -> sm89)",
    )
    assert states(plan, None)[cell.id].resolved_targets is None  # no GPU, nothing locked


def test_removed_cells_and_escaping_ids(tmp_path: Path) -> None:
    cell = make_cell()
    plan = make_plan(tmp_path, cell)
    lock = lock_of({"m@sm86": locked(plan, cell), "gone@sm80": locked(plan, cell)})
    result = F.check(
        plan,
        plan.buildable,
        lock,
        plan.manifest.lock_path,
        Stamps.load(tmp_path),
        installed=VERSION,
    )
    assert result.removed == ("gone@sm80",)
    evil = replace(cell, model=replace(cell.model, name="../../x"))
    with pytest.raises(InputError, match="would escape the output folder"):
        F.engine_path(plan.manifest, evil)
