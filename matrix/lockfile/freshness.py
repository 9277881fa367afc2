"""Make-style freshness: which cells of a plan need building, and why.

A cell is up to date when its fingerprint equals its lock entry's and the engine on disk is
the one the lock names (trusted by its stat through `matrix.lockfile.stamps`, hashed
otherwise or with `verify`). Pure reading: nothing here imports tensorrt_rtx, onnx or rich.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix.errors import InputError, Problem
from matrix.facts.types import ModelFacts
from matrix.file_stat import file_stat
from matrix.lockfile.fingerprint import build_options, fingerprint
from matrix.lockfile.io import plain_json
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, LockEntry
from matrix.manifest.types import Manifest
from matrix.plan.types import Cell, Plan
from matrix.versions import installed_tensorrt_rtx

if TYPE_CHECKING:  # only named: a no-op run needs no GPU
    from matrix.gpu import Gpu

NEW_CELL = "new cell"
MODEL_CHANGED = "model changed"
OPTIONS_CHANGED = "options changed"
TARGETS_CHANGED = "targets changed"
GPU_CHANGED = "GPU changed"
LIBRARY_CHANGED = "library version changed"
INPUTS_CHANGED = "build inputs changed"
ENGINE_MISSING = "engine missing"
ENGINE_MODIFIED = "engine modified"
ENGINE_MOVED = "engine path changed"
FORCED = "forced (--force)"
REMOVED = "removed from the manifest"
WEIGHTS_ONLY = "weights changed; weightless engine stays valid, refit with the new weights"


def engine_path(manifest: Manifest, cell: Cell, output: Path | None = None) -> Path:
    """`<output>/<model>/<cell id>.engine`; refuses anything that would land outside output.

    `output` is the manifest's output folder already resolved: resolving costs a few
    syscalls per path, which a no-op run over 10,000 cells does not want to pay per cell.
    """
    return Path(engine_file(manifest, cell, str(output or manifest.output.resolve())))


def engine_file(manifest: Manifest, cell: Cell, folder: str) -> str:
    """`engine_path` as a string, under the resolved output `folder`."""
    name = cell.model.name
    if _plain(name) and _plain(cell.id) and name not in (".", ".."):
        return f"{folder}{os.sep}{name}{os.sep}{cell.id}.engine"  # normal already
    path = os.path.normpath(os.path.join(folder, name, f"{cell.id}.engine"))
    if not path.startswith(folder + os.sep):
        message = f"the engine path of {cell.id} would escape the output folder {folder}"
        raise InputError([Problem(str(manifest.path), message)])
    return path


def _plain(name: str) -> bool:
    """A name without a path separator: joined to a resolved folder, nothing to normalize."""
    return "/" not in name and os.sep not in name and (os.altsep is None or os.altsep not in name)


def relative_posix(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


@dataclass(frozen=True)
class CellState:
    cell: Cell
    engine_file: str
    """The engine's absolute path (`engine` as a Path): a no-op over 10,000 cells makes none."""
    resolved_targets: tuple[str, ...] | None
    """What the builder is given; None for a `current` cell on a host without a GPU."""
    fingerprint: str | None
    reasons: tuple[str, ...]
    """Why it must be (re)built; empty when up to date."""
    notes: tuple[str, ...] = ()
    """Things worth saying that do not make it stale (a weights-only change)."""

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    @cached_property
    def engine(self) -> Path:
        return Path(self.engine_file)


@dataclass(frozen=True)
class Freshness:
    cells: tuple[CellState, ...]
    removed: tuple[str, ...]
    """Lock entries whose cell the plan no longer builds."""
    installed: str
    """TensorRT-RTX version the states were computed against."""

    @property
    def stale(self) -> tuple[CellState, ...]:
        return tuple(state for state in self.cells if state.stale)

    def planned_fingerprints(self) -> dict[str, str]:
        """Fingerprints that equal the plan identity's: cells whose targets needed no GPU."""
        return {
            state.cell.id: state.fingerprint
            for state in self.cells
            if state.fingerprint and not state.cell.target.current
        }

    @property
    def up_to_date(self) -> tuple[CellState, ...]:
        return tuple(state for state in self.cells if not state.stale)


@dataclass(frozen=True)
class Context:
    lock: Lock | None
    lock_dir: Path
    output: str
    """Resolved."""
    output_in_lock: str
    """The output folder as the lock names engines in it: `engines/` (`relative_posix`)."""
    installed: str
    gpu: Gpu | None
    stamps: Stamps
    verify: bool
    force: bool


def check(
    plan: Plan,
    cells: Iterable[Cell],
    lock: Lock | None,
    lock_path: Path,
    stamps: Stamps,
    *,
    installed: str | None = None,
    gpu: Gpu | None = None,
    verify: bool = False,
    force: bool = False,
) -> Freshness:
    """Freshness of `cells` (buildable cells of `plan`) against `lock` and the disk."""
    lock_dir, output = lock_path.parent.resolve(), plan.manifest.output.resolve()
    context = Context(
        lock=lock,
        lock_dir=lock_dir,
        output=str(output),
        output_in_lock=relative_posix(output, lock_dir) + "/",
        installed=installed or installed_tensorrt_rtx(),
        gpu=gpu,
        stamps=stamps,
        verify=verify,
        force=force,
    )
    states = tuple(cell_state(plan, cell, context) for cell in cells)
    buildable = {cell.id for cell in plan.buildable}
    removed = tuple(sorted(set(lock.engines) - buildable)) if lock else ()
    return Freshness(cells=states, removed=removed, installed=context.installed)


def resolve_targets(cell: Cell, gpu: Gpu | None, entry: LockEntry | None) -> tuple[str, ...] | None:
    """The CCs the builder is given. Without a GPU, a `current` cell keeps its locked CC."""
    if not cell.target.current:
        return cell.target.spec
    if gpu is not None:
        return (gpu.cc.name,)
    return entry.resolved_targets if entry else None


def cell_state(plan: Plan, cell: Cell, context: Context) -> CellState:
    entry = context.lock.engines.get(cell.id) if context.lock else None
    facts = plan.facts[cell.model.name]
    engine = engine_file(plan.manifest, cell, context.output)
    resolved = resolve_targets(cell, context.gpu, entry)
    digest = None if resolved is None else fingerprint(cell, facts, context.installed, resolved)
    if entry is None or digest is None:
        return CellState(cell, engine, resolved, digest, (NEW_CELL,))
    reasons = input_reasons(cell, facts, entry, digest, resolved or (), context)
    if not reasons:
        reasons = engine_reasons(entry, engine, context)
    if context.force:
        reasons = (*reasons, FORCED)
    return CellState(cell, engine, resolved, digest, reasons, weight_notes(cell, facts, entry))


def input_reasons(
    cell: Cell,
    facts: ModelFacts,
    entry: LockEntry,
    digest: str,
    resolved: tuple[str, ...],
    context: Context,
) -> tuple[str, ...]:
    reasons: list[str] = []
    gpu_name = context.gpu.name if context.gpu else entry.gpu
    if cell.target.current and entry.gpu != gpu_name:
        reasons.append(f"{GPU_CHANGED} ({entry.gpu} -> {gpu_name})")
    if entry.fingerprint == digest:
        return tuple(reasons)
    if model_changed(cell, facts, entry):
        reasons.append(MODEL_CHANGED)
    if plain_json(entry.options) != build_options(cell):
        reasons.append(OPTIONS_CHANGED)
    if entry.resolved_targets != resolved:
        label = GPU_CHANGED if cell.target.current else TARGETS_CHANGED
        reasons.append(f"{label} ({_ccs(entry.resolved_targets)} -> {_ccs(resolved)})")
    lock = context.lock
    if lock is not None and lock.tensorrt_rtx != context.installed:
        reasons.append(f"{LIBRARY_CHANGED} ({lock.tensorrt_rtx} -> {context.installed})")
    return tuple(reasons) or (INPUTS_CHANGED,)


def _ccs(targets: tuple[str, ...]) -> str:
    return ",".join(targets) or "default"


def model_changed(cell: Cell, facts: ModelFacts, entry: LockEntry) -> bool:
    if cell.weightless:
        return entry.model.graph_digest != facts.graph_digest
    return entry.model.digest != facts.digest


def weight_notes(cell: Cell, facts: ModelFacts, entry: LockEntry) -> tuple[str, ...]:
    if not cell.weightless:
        return ()
    weights_only = not model_changed(cell, facts, entry) and (
        entry.model.weights_digest != facts.weights_digest
    )
    return (WEIGHTS_ONLY,) if weights_only else ()


def engine_reasons(entry: LockEntry, engine: str, context: Context) -> tuple[str, ...]:
    # The path the lock writes for this engine, compared as text before any normpath.
    as_written = context.output_in_lock + engine[len(context.output) + 1 :].replace(os.sep, "/")
    if entry.path != as_written:
        locked = os.path.normpath(os.path.join(context.lock_dir, entry.path))
        if locked != engine:
            return (f"{ENGINE_MOVED} ({entry.path})",)
    if not context.verify and context.stamps.matches(engine, entry.size, entry.sha256):
        return ()
    return engine_check(entry, engine, context.stamps)


def engine_check(entry: LockEntry, engine: str, stamps: Stamps) -> tuple[str, ...]:
    """Hash the engine and compare it with the lock; a match refreshes its stamp."""
    from matrix.atomic import sha256_file  # its tempfile import is for runs that write

    stat = file_stat(engine)
    if stat is None:
        return (ENGINE_MISSING,)
    if stat.size != entry.size:
        return (ENGINE_MODIFIED,)
    sha = sha256_file(Path(engine))
    if sha != entry.sha256:
        return (ENGINE_MODIFIED,)
    stamps.record(engine, sha, stat)
    return ()


def as_json(freshness: Freshness) -> dict[str, Any]:
    """What `status --json` prints."""
    cells: list[Mapping[str, Any]] = [
        {
            "id": state.cell.id,
            "stale": state.stale,
            "reasons": list(state.reasons),
            "notes": list(state.notes),
            "engine": state.engine_file,
        }
        for state in freshness.cells
    ]
    return {
        "tensorrt_rtx": freshness.installed,
        "cells": cells,
        "removed": list(freshness.removed),
    }
