"""Locks as parsed, remembered by the lockfile's `FileStat`: reading 10,000 entries of JSON
into typed entries is a fifth of a no-op `build`, unpickling them a third of that.

One entry per lockfile path (`locks/` in the cache folder; how entries are kept, and why only
the user's own are read: `matrix.pickle_cache`), stored by the run that parsed the lock
unless the lock was racy then (`matrix.file_stat`). Only a lock that passed `read_lock`'s
checks is stored, so a hit needs none. Every lock write renames a new file into place, so
the entry of an older lock is never taken for the new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from matrix import pickle_cache
from matrix.file_stat import FileStat, is_racy
from matrix.lockfile.types import Lock
from matrix.pickle_cache import CodeStats, code_as_imported

FORMAT = 1
"""Bump when an entry's layout changes (code changes are caught by the code's stats)."""
KEEP = 50
"""Entries kept, one per lockfile: the least recently stored go first."""


class Key(NamedTuple):
    format: int
    lock: str
    """Absolute path."""
    stat: FileStat
    code: CodeStats | None


def load(lock_path: Path, stat: FileStat) -> Lock | None:
    """The lock parsed from `lock_path` when it had `stat`, the stat it has now."""
    key = _key(lock_path, stat)
    lock = pickle_cache.load(_entry(key.lock), key.__eq__)
    return lock if isinstance(lock, Lock) else None


def store(lock_path: Path, stat: FileStat, lock: Lock, read_at_ns: int) -> None:
    """Remember `lock`, parsed from `lock_path` with `stat` taken before reading began at
    `read_at_ns` (`time.time_ns()`), unless it is racy."""
    if not is_racy(stat, read_at_ns):
        key = _key(lock_path, stat)
        pickle_cache.store(_entry(key.lock), key, lock, KEEP)


def _key(lock_path: Path, stat: FileStat) -> Key:
    return Key(FORMAT, os.path.abspath(lock_path), stat, code_as_imported())


def _entry(lock: str) -> Path:
    return pickle_cache.entry_path("locks", lock)
