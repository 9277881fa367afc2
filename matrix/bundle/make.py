"""Write a bundle: the engines a lock names, hard-linked or copied into one folder, with
`bundle.json` (schemas/bundle.schema.json) saying what each engine is and runs on.

Order of work, so that no failure leaves a folder that verifies but is incomplete: check
everything that can be checked first (plan, lock, freshness, the output folder); remove an
earlier bundle's `bundle.json`; put every file in place (each through a temporary sibling
and a rename, its sha256 checked against the lock on the way); make them durable; and only
then write `bundle.json`, atomically. Interrupted anywhere, the folder has no `bundle.json`
and `bundle verify` says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from matrix import __version__
from matrix.atomic import make_durable, replace, write_atomic
from matrix.errors import InputError, Problem, Stale
from matrix.facts.types import ModelFacts
from matrix.lockfile.freshness import check
from matrix.lockfile.io import read_lock
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, LockEntry
from matrix.plan.types import Cell, Plan
from matrix.runtime.bundle import (
    BUNDLE_FILE,
    Bundle,
    BundleEngine,
    BundleFile,
    Family,
    RefitNeeds,
    bundle_files,
    bundle_to_json,
    read_bundle,
)

ENGINES = "engines"
ONNX = "onnx"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Placed:
    """One file put into the bundle."""

    path: str
    """Relative to the bundle."""
    size: int
    how: str
    """`linked` or `copied`."""


@dataclass(frozen=True)
class BundleReport:
    bundle: Bundle
    placed: tuple[Placed, ...]
    left_out: tuple[str, ...] = ()
    """Buildable cells the lock has no engine for (not built yet, or need a GPU)."""
    removed: tuple[str, ...] = field(default=())
    """Files of an earlier bundle in the folder that this one no longer holds."""


OnPlaced = Callable[[Placed], None]


def make_bundle(
    plan: Plan,
    lock_path: Path,
    output: Path,
    patterns: Sequence[str] = (),
    *,
    with_onnx: bool = False,
    copy: bool = False,
    on_placed: OnPlaced | None = None,
) -> BundleReport:
    """Bundle the engines of `plan`'s cells that the lock names (those `patterns` select).

    Refused before anything is written: InputError (exit 2) for a missing lock, a cell asked
    for by id that has no engine, an output folder that is neither empty nor a bundle;
    Stale (exit 1) when a chosen cell is out of date. Later failures (an engine that is no
    longer the one the lock recorded, a full disk) leave the folder without bundle.json.
    """
    lock = read_lock(lock_path)
    if lock is None:
        missing = Problem(str(lock_path), "no such lockfile: run `rtx-matrix build` first")
        raise InputError([missing])
    cells, left_out = _chosen(plan, lock, patterns)
    _check_fresh(plan, cells, lock, lock_path)
    _check_output(output, plan.manifest.output)
    earlier = _earlier_files(output)
    bundle = _describe(plan, lock, lock_path, cells, output, with_onnx)
    sources = _sources(plan, lock, lock_path, cells, bundle)

    (output / BUNDLE_FILE).unlink(missing_ok=True)  # from here on the folder is no bundle
    placed = []
    for relative, (source, size, sha256) in sources.items():
        how = place(source, output / PurePosixPath(relative), size, sha256, copy)
        placed.append(Placed(relative, size, how))
        if on_placed is not None:
            on_placed(placed[-1])
    removed = _remove_stale(output, earlier - set(sources))
    for relative in sources:
        make_durable(output / PurePosixPath(relative))
    write_atomic(output / BUNDLE_FILE, bundle_to_json(bundle))
    return BundleReport(bundle, tuple(placed), left_out, removed)


# ------------------------------------------------------------------------- what to bundle


def _chosen(plan: Plan, lock: Lock, patterns: Sequence[str]) -> tuple[list[Cell], tuple[str, ...]]:
    from matrix.lockfile.survey import select_cells

    chosen = [cell for cell in select_cells(plan, patterns) if cell in plan.buildable]
    unbuilt = [cell.id for cell in chosen if cell.id not in lock.engines]
    asked = [cell_id for cell_id in unbuilt if cell_id in patterns]
    if asked:
        raise InputError([
            Problem("", f"{cell_id}: the lock has no engine for it: run `rtx-matrix build` first")
            for cell_id in asked
        ])
    cells = [cell for cell in chosen if cell.id in lock.engines]
    if not cells:
        what = "the cells named" if patterns else "the plan"
        raise InputError(f"nothing to bundle: the lock has no engine for {what}")
    return cells, tuple(unbuilt)


def _check_fresh(plan: Plan, cells: list[Cell], lock: Lock, lock_path: Path) -> None:
    # No GPU is asked for: a `current` cell is judged against the CC its lock entry records,
    # whatever GPU the bundling machine has (or lacks).
    stamps = Stamps.load(plan.manifest.output.resolve())
    stale = check(plan, cells, lock, lock_path, stamps).stale
    if stale:
        listed = "; ".join(f"{state.cell.id} ({', '.join(state.reasons)})" for state in stale)
        raise Stale(f"out of date: {listed}: run `rtx-matrix build` before bundling")


def _check_output(output: Path, build_output: Path) -> None:
    if output.resolve().is_relative_to(build_output.resolve()):
        raise InputError([Problem(str(output), (
            f"inside the build's output folder {build_output}, where `rtx-matrix clean` "
            "deletes engines the lock does not name: choose another folder"
        ))])
    if output.exists() and not output.is_dir():
        raise InputError([Problem(str(output), "not a folder")])
    if output.is_dir() and any(output.iterdir()) and not (output / BUNDLE_FILE).is_file():
        raise InputError([Problem(
            str(output), f"not empty and not a bundle (no {BUNDLE_FILE}): name a new folder"
        )])


def _earlier_files(output: Path) -> set[str]:
    """The files an earlier bundle in `output` holds, to remove those this one drops."""
    if not (output / BUNDLE_FILE).is_file():
        return set()
    try:
        return set(bundle_files(read_bundle(output)))
    except InputError:
        return set()  # unreadable: leave its files alone rather than guess


def _describe(
    plan: Plan, lock: Lock, lock_path: Path, cells: list[Cell], output: Path, with_onnx: bool
) -> Bundle:
    engines = tuple(
        _engine(cell, lock.engines[cell.id], lock, lock_path, plan.facts[cell.model.name],
                with_onnx)
        for cell in cells
    )
    bundled = {cell.model.name for cell in cells}
    families: dict[str, list[str]] = {}
    for model in plan.manifest.models:
        if model.name in bundled:
            families.setdefault(model.family, []).append(model.name)
    return Bundle(
        root=output,
        tool=__version__,
        tensorrt_rtx=lock.tensorrt_rtx,
        families=tuple(Family(name, tuple(models)) for name, models in families.items()),
        engines=engines,
    )


def _engine(
    cell: Cell, entry: LockEntry, lock: Lock, lock_path: Path, facts: ModelFacts, with_onnx: bool
) -> BundleEngine:
    return BundleEngine(
        cell=cell.id,
        model=cell.model.name,
        family=cell.model.family,
        path=f"{ENGINES}/{cell.id}.engine",
        sha256=entry.sha256,
        size=entry.size,
        tensorrt_rtx=lock.tensorrt_rtx,
        targets=entry.targets,
        built_for=entry.resolved_targets,
        runs_on=entry.runs_on,
        weightless=entry.weightless,
        dtypes=tuple(sorted(facts.dtypes)),
        io=entry.io,
        weights_bytes=entry.weights_bytes,
        stripped_weights_bytes=entry.stripped_weights_bytes,
        refit=_refit_needs(cell, facts, with_onnx) if entry.weightless else None,
    )


def _refit_needs(cell: Cell, facts: ModelFacts, with_onnx: bool) -> RefitNeeds:
    """The model's files by name, size and sha256; in the bundle too with `--with-onnx`.

    The digests are the model's as it is now: the freshness check has made sure its graph is
    the one the engine was built from, and its weights (perhaps newer) are what refit uses.
    """
    onnx = Path(facts.path)
    names = [onnx.name, *facts.external_files]
    files = []
    for name in names:
        source = onnx.parent / PurePosixPath(name)
        size, sha256 = _size_and_sha256(source)
        inside = f"{ONNX}/{cell.model.name}/{name}" if with_onnx else None
        files.append(BundleFile(name=name, size=size, sha256=sha256, path=inside))
    return RefitNeeds(
        files=tuple(files),
        digest=facts.digest,
        graph_digest=facts.graph_digest,
        weights_digest=facts.weights_digest,
    )


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as error:
        raise InputError([Problem(str(path), f"cannot read it: {error.strerror}")]) from None
    return size, digest.hexdigest()


def _sources(
    plan: Plan, lock: Lock, lock_path: Path, cells: list[Cell], bundle: Bundle
) -> dict[str, tuple[Path, int, str]]:
    """Bundle path -> (source file, size, sha256) for every file the bundle will hold."""
    lock_dir = lock_path.parent
    sources: dict[str, tuple[Path, int, str]] = {}
    for cell, engine in zip(cells, bundle.engines, strict=True):
        source = lock_dir / PurePosixPath(lock.engines[cell.id].path)
        sources[engine.path] = (source, engine.size, engine.sha256)
        onnx = Path(plan.facts[cell.model.name].path)
        for file in engine.refit.files if engine.refit else ():
            if file.path is not None:
                sources[file.path] = (onnx.parent / PurePosixPath(file.name), file.size,
                                      file.sha256)
    return sources


# -------------------------------------------------------------------------- placing files


def place(source: Path, target: Path, size: int, sha256: str, copy: bool = False) -> str:
    """Put `source` at `target` through a temporary sibling and a rename, refusing it unless
    it has this size and sha256. A hard link when the file system allows (and not `copy`):
    the build replaces engines by rename, never in place, so a linked file never changes
    under the bundle. Returns `linked` or `copied`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temp.unlink(missing_ok=True)
    try:
        how = _link_or_copy(source, temp, copy)
        actual_size, actual = _size_and_sha256(temp)
        if (actual_size, actual) != (size, sha256):
            raise InputError([Problem(
                str(source), "not the file the lock recorded (its sha256 differs): rebuild it"
            )])
        replace(temp, target)  # waits a moment for a reader (Windows)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return how


def _link_or_copy(source: Path, temp: Path, copy: bool) -> str:
    if not source.is_file():
        raise InputError([Problem(str(source), "missing: run `rtx-matrix build` first")])
    if not copy:
        try:
            os.link(source, temp)
            return "linked"
        except OSError:
            pass  # another file system, or one without hard links: copy instead
    try:
        shutil.copyfile(source, temp)
    except OSError as error:
        raise InputError([Problem(str(temp), f"cannot write it: {error.strerror}")]) from None
    return "copied"


def _remove_stale(output: Path, relatives: set[str]) -> tuple[str, ...]:
    for relative in sorted(relatives):
        (output / PurePosixPath(relative)).unlink(missing_ok=True)
    _remove_empty_folders(output)
    return tuple(sorted(relatives))


def _remove_empty_folders(output: Path) -> None:
    for folder in (output / ENGINES, output / ONNX):
        if not folder.is_dir():
            continue
        for path, _, _ in sorted(os.walk(folder), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):  # not empty
                Path(path).rmdir()
