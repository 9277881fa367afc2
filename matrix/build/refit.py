"""`rtx-matrix refit`: check its inputs, refit a weightless engine and save the full engine.

The library calls live in `matrix.runtime.refit`, shared with first-launch `prepare`. They
need a supported GPU; callers check that with `matrix.gpu` before calling `refit_engine`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from matrix.atomic import sha256_file, write_atomic
from matrix.errors import InputError, Problem
from matrix.runtime import refit as library


@dataclass(frozen=True)
class RefitResult:
    output: Path
    size: int
    sha256: str
    seconds: float


def default_output(engine: Path) -> Path:
    """`engines/m@sm89+weightless.engine` -> `engines/m@sm89+weightless.full.engine`."""
    return engine.with_name(f"{engine.stem}.full.engine")


def check_inputs(engine: Path, onnx: Path, output: Path) -> None:
    """Every path problem at once, as an InputError (exit 2); nothing is read past a stat."""
    problems = [
        *_file_problems(engine, "engine"),
        *_file_problems(onnx, "ONNX model"),
        *_output_problems(output, engine),
    ]
    if problems:
        raise InputError(problems)


def _file_problems(path: Path, what: str) -> list[Problem]:
    if not path.exists():
        return [Problem(str(path), f"no such {what}")]
    if not path.is_file():
        return [Problem(str(path), f"the {what} is not a file")]
    if path.stat().st_size == 0:
        return [Problem(str(path), f"the {what} is empty")]
    return []


def _output_problems(output: Path, engine: Path) -> list[Problem]:
    if output.resolve() == engine.resolve():
        return [Problem(str(output), "the output would overwrite the weightless engine")]
    if not output.parent.is_dir():
        return [Problem(str(output), f"no such folder: {output.parent}")]
    if output.is_dir():
        return [Problem(str(output), "the output is a folder")]
    return []


def refit_engine(engine: Path, onnx: Path, output: Path) -> RefitResult:
    """Refit `engine` with the weights of `onnx` and write the full engine to `output`.

    Needs a supported GPU as CUDA's current device. Raises InputError when the engine is not
    refittable, RefitFailed with the library's error otherwise. `output` is written through a
    temporary sibling and a rename: never half-written.
    """
    started = time.perf_counter()
    blob = library.refit_blob(engine, onnx)
    write_atomic(output, blob)
    digest = hashlib.sha256(blob).hexdigest()
    return RefitResult(output, len(blob), digest, time.perf_counter() - started)


@dataclass(frozen=True)
class LockedEngine:
    """What `refit --lock` takes from one lock entry."""

    engine: Path
    onnx: Path
    graph_digest: str


def engine_from_lock(lock_path: Path, cell_id: str) -> LockedEngine:
    """The weightless engine and model a lock entry names, checked against the lock.

    InputError (exit 2) for a missing lock or cell, a full (not weightless) engine, or an
    engine file that is no longer the one the lock recorded.
    """
    from matrix.lockfile.io import read_lock
    from matrix.manifest.suggest import did_you_mean

    lock = read_lock(lock_path)
    if lock is None:
        raise InputError([Problem(str(lock_path), "no such lockfile")])
    entry = lock.engines.get(cell_id)
    if entry is None:
        hint = did_you_mean(cell_id, lock.engines)
        raise InputError([Problem(str(lock_path), f"no engine {cell_id!r} in the lock{hint}")])
    where = f"{lock_path}: {cell_id}"
    if not entry.weightless:
        raise InputError(f"{where}: not a weightless engine: {entry.path} holds its weights")
    root = lock_path.parent
    engine = root / entry.path
    if engine.is_file() and (
        engine.stat().st_size != entry.size or sha256_file(engine) != entry.sha256
    ):
        raise InputError(f"{where}: {engine} is not the engine the lock recorded; rebuild it")
    return LockedEngine(engine, root / entry.model.path, entry.model.graph_digest)


def check_graph_digest(onnx: Path, expected: str) -> None:
    """Refuse a model whose graph is not the one the weightless engine was built from.

    Only the graph matters: new weights are what refit is for.
    """
    from matrix.facts.cache import FactsCache
    from matrix.facts.onnx_inspect import ModelFileError

    try:
        actual = FactsCache().get(onnx).graph_digest
    except ModelFileError as error:
        raise InputError([Problem(str(onnx), error.reason)]) from None
    if actual != expected:
        raise InputError(
            [Problem(str(onnx), "the model's graph changed since the engine was built; rebuild it")]
        )
