"""Objects kept between runs as pickles in rtx-matrix's cache folder, each entry led by the
key it was made from, so a stale entry is seen before its value is read. The plan cache
(`matrix.plan.cache`) and the lock cache (`matrix.lockfile.cache`) keep theirs here.

Every key holds the `FileStat`s of rtx-matrix's own code (`code_as_imported`): the pickled
classes and the code that made the values are the code of that moment. Unpickling runs code,
so an entry is read only when this user owns it and nobody else may write it, and entries
live in the user's own cache folder (`matrix.cache_dir`), never in a project.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matrix import IMPORTED_AT_NS
from matrix.cache_dir import cache_dir
from matrix.file_stat import FileStat, file_stat, is_racy

_PACKAGE = os.path.dirname(os.path.abspath(__file__))

CodeStats = tuple[tuple[str, FileStat], ...]


def entry_path(kind: str, name: str) -> Path:
    """The entry for `name` (a file's absolute path) in the `kind` folder."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()
    return cache_dir() / kind / f"{digest}.pickle"


def load(entry: Path, holds: Callable[[Any], bool]) -> Any:
    """The value at `entry` when `holds(its key)`; None when not, or when the entry is
    missing, foreign or unreadable."""
    code_as_imported()  # taken now, before a miss makes the caller import the rest
    try:
        with open(entry, "rb") as handle:
            if not _private(os.fstat(handle.fileno())):
                return None
            if not holds(pickle.load(handle)):
                return None
            return pickle.load(handle)
    except Exception:  # a missing, truncated, foreign or outdated entry is only a miss
        return None


def store(entry: Path, key: Any, value: Any, keep: int) -> None:
    """Write `key`, then `value`; keep the `keep` most recently stored entries of the folder.
    Nothing is stored when rtx-matrix's code changed since this process read it. Best
    effort: a cache we cannot write only costs the next run time."""
    if code_as_imported() is None or code_stats() != code_as_imported():
        return
    buffer = io.BytesIO()
    pickle.dump(key, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    from matrix.atomic import write_atomic
    from matrix.manifest.valid_cache import prune

    with contextlib.suppress(OSError):
        write_atomic(entry, buffer.getbuffer(), durable=False)
        os.chmod(entry, 0o600)  # whatever mode write_atomic gives: see _private
        prune(entry.parent, keep)


@functools.cache
def code_as_imported() -> CodeStats | None:
    """The stats of the code this process runs: `code_stats()` when it first asked, unless a
    file was modified since (or just before) this process began importing rtx-matrix; then
    None, and no entry is read or stored."""
    code = code_stats()
    if any(is_racy(stat, IMPORTED_AT_NS) for _, stat in code):
        return None
    return code


def code_stats() -> CodeStats:
    """rtx-matrix's own sources and manifest schema, by path."""
    from matrix.schemas import schema_path

    found = [(str(path), file_stat(path)) for path in (schema_path("manifest"),)]
    folders = [_PACKAGE]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    found.append((entry.path, FileStat.of(entry.stat())))
                elif entry.name != "__pycache__" and entry.is_dir():
                    folders.append(entry.path)
    return tuple(sorted((path, stat) for path, stat in found if stat is not None))


def _private(stat: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else (Windows: the user's own profile)."""
    if not hasattr(os, "getuid"):
        return True
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o022


def _mapping_proxy(data: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(data)


class _Pickler(pickle.Pickler):
    """`MappingProxyType` (YAML locations, lock entries' options) pickles as its dict."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is MappingProxyType:
            return _mapping_proxy, (dict(obj),)
        return NotImplemented
