"""Union the lockfiles of sharded builds into one (`rtx-matrix lock merge`).

Check everything first, then write once through `write_lock` (sorted, atomic): a merge that
fails writes nothing. The result depends only on the set of inputs, not their order, except
where `--on-conflict first|last` is asked to choose by order.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from types import MappingProxyType

from matrix import __version__
from matrix.errors import InputError, Problem
from matrix.lockfile.io import entry_to_dict, read_lock, write_lock
from matrix.lockfile.types import Lock, LockEntry

CONFLICT_POLICIES = ("error", "first", "last")


@dataclass(frozen=True)
class ShardLock:
    """One input: where it was read from (its folder anchors its relative paths) and what."""

    path: Path
    lock: Lock


def merge_files(
    paths: Sequence[Path],
    output: Path,
    on_conflict: str = "error",
    allow_partial: bool = False,
) -> Lock:
    """Read every input, merge, and write the result to `output`. Returns what was written."""
    merged = merge_locks(read_inputs(paths), output, on_conflict, allow_partial)
    write_lock(output, merged)
    return merged


def read_inputs(paths: Sequence[Path]) -> tuple[ShardLock, ...]:
    if not paths:
        raise InputError("lock merge: name at least one lockfile to merge")
    inputs, problems = [], []
    for path in paths:
        lock = read_lock(path)
        if lock is None:
            problems.append(Problem(str(path), "no such lockfile"))
        else:
            inputs.append(ShardLock(path, lock))
    if problems:
        raise InputError(problems)
    return tuple(inputs)


def merge_locks(
    inputs: Sequence[ShardLock],
    output: Path,
    on_conflict: str = "error",
    allow_partial: bool = False,
) -> Lock:
    """The union of `inputs` with paths relative to `output`'s folder and no `shard`.

    Raises InputError (nothing written) when inputs come from different plans or library
    versions, when a cell has different engines in two inputs and `on_conflict` is `error`,
    or when plan cells are missing from every input and `allow_partial` is false.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise InputError(f"--on-conflict {on_conflict!r}: choose one of "
                         f"{', '.join(CONFLICT_POLICIES)}")
    if not inputs:
        raise InputError("lock merge: name at least one lockfile to merge")
    reference = _check_same_origin(inputs)
    out_dir = _folder_of(output)
    rebased = [_rebased(item, out_dir) for item in inputs]
    engines = _union(rebased, on_conflict)
    if not allow_partial:
        _check_complete(reference.lock, engines)
    return Lock(
        tool=__version__,
        tensorrt_rtx=reference.lock.tensorrt_rtx,
        manifest=_rebase(reference.lock.manifest, _folder_of(reference.path), out_dir),
        plan=reference.lock.plan,
        engines=MappingProxyType(dict(sorted(engines.items()))),
        shard=None,
    )


def _check_same_origin(inputs: Sequence[ShardLock]) -> ShardLock:
    """The input most agree with; every input that differs from it is a problem."""
    def origin(item: ShardLock) -> tuple[str, str]:
        return item.lock.plan.digest, item.lock.tensorrt_rtx

    # Most common origin wins, ties by argument order (Counter keeps insertion order).
    common = Counter(origin(item) for item in inputs).most_common(1)[0][0]
    reference = next(item for item in inputs if origin(item) == common)
    problems = []
    for item in inputs:
        digest, version = origin(item)
        if version != common[1]:
            problems.append(Problem(str(item.path), (
                f"built with TensorRT-RTX {version}, but {reference.path} with {common[1]}: "
                "shards must use the same library version")))
        elif digest != common[0]:
            problems.append(Problem(str(item.path), (
                f"comes from a different plan (digest {_short(digest)}) than {reference.path} "
                f"({_short(common[0])}): shards must build the same manifest and lock")))
    if problems:
        raise InputError(problems)
    return reference


def _union(inputs: Sequence[ShardLock], on_conflict: str) -> dict[str, LockEntry]:
    chosen: dict[str, tuple[ShardLock, LockEntry]] = {}
    problems = []
    for item in inputs:
        for cell, entry in item.lock.engines.items():
            if cell not in chosen:
                chosen[cell] = (item, entry)
                continue
            first_item, first = chosen[cell]
            if first.sha256 == entry.sha256:
                # Same engine: keep the canonical one, so input order cannot show in the output.
                if _canonical(entry) < _canonical(first):
                    chosen[cell] = (item, entry)
            elif on_conflict == "last":
                chosen[cell] = (item, entry)
            elif on_conflict == "error":
                problems.append(Problem(str(item.path), (
                    f"{cell}: engine {_short(entry.sha256)} differs from {_short(first.sha256)} "
                    f"in {first_item.path} (choose one with --on-conflict first|last)")))
    if problems:
        raise InputError(problems)
    return {cell: entry for cell, (_, entry) in chosen.items()}


def _check_complete(reference: Lock, engines: Mapping[str, LockEntry]) -> None:
    missing = sorted(set(reference.plan.cells) - set(engines))
    if missing:
        raise InputError([
            Problem("", f"{cell}: in the plan, but no input lock built it "
                        "(pass --allow-partial to merge anyway)")
            for cell in missing
        ])


def _rebased(item: ShardLock, out_dir: str) -> ShardLock:
    in_dir = _folder_of(item.path)
    if in_dir == out_dir:
        return item
    engines = {
        cell: replace(
            entry,
            path=_rebase(entry.path, in_dir, out_dir),
            model=replace(entry.model, path=_rebase(entry.model.path, in_dir, out_dir)),
        )
        for cell, entry in item.lock.engines.items()
    }
    return ShardLock(item.path, replace(item.lock, engines=MappingProxyType(engines)))


def _rebase(relative: str, from_dir: str, to_dir: str) -> str:
    """A path relative to `from_dir`, made relative to `to_dir` (POSIX separators)."""
    absolute = os.path.normpath(os.path.join(from_dir, relative))
    return PurePath(os.path.relpath(absolute, to_dir)).as_posix()


def _folder_of(lock_path: Path) -> str:
    return os.path.dirname(os.path.abspath(lock_path))


def _canonical(entry: LockEntry) -> str:
    return json.dumps(entry_to_dict(entry), sort_keys=True)


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
