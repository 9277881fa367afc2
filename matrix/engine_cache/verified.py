"""Folder-cache engines this user has hashed, trusted by their stat from then on.

Hashing is most of a folder fetch: on this project's 2-core machine sha256 runs at 1.4 GB/s,
2.1 times as long as the kernel takes to copy the same bytes (bench/bench_cache.py), so a
fetch that hashes every engine cannot come near the cost of a copy. The bytes of a cache
file do not change while its stat does not, which is the trust the stamps already give the
engines in the output folder (`matrix.file_stat`, docs/caches.md). So once a fetch has
hashed an engine file of a folder cache and found the sha256 it is named after, it keeps
that file's path and stat here; a later fetch of the same file with the same stat copies it
without hashing, still checking its size and header. The mark holds the ctime too, which
no program can set on POSIX: content written in place with its old mtime put back is hashed
again (on Windows st_ctime is the creation time, which a program can set).

The racy rule holds: a file modified less than `RACY_NS` before it was hashed gets no mark.
The marks live in this user's own cache folder (`matrix.cache_dir`), never in the shared
cache, whose writers are not the reader. `cache status --verify` always hashes.

A fetch touches an entry's record, not its engine, for `cache gc`'s order: moving the
engine's mtime would void every mark on it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from matrix.atomic import write_atomic
from matrix.cache_dir import cache_dir
from matrix.file_stat import FileStat, is_racy


def _mark(sha256: str) -> Path:
    return cache_dir() / "verified" / sha256


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What a mark holds of a file's stat."""
    return (*FileStat.of(stat), stat.st_ctime_ns)


def unchanged(now: os.stat_result, before: os.stat_result) -> bool:
    """Whether a file's stat says it is as it was, as a mark would judge it."""
    return _identity(now) == _identity(before)


def _text(path: str, stat: os.stat_result) -> str:
    return " ".join(map(str, (*_identity(stat), os.path.abspath(path))))


def vouches(path: str, stat: os.stat_result, sha256: str) -> bool:
    """Whether the file at `path`, with `stat`, was hashed to `sha256` since it last changed."""
    try:
        return _mark(sha256).read_text(encoding="utf-8") == _text(path, stat)
    except (OSError, UnicodeDecodeError):
        return False


def remember(path: str, stat: os.stat_result, sha256: str, read_at_ns: int) -> None:
    """The file at `path` had `stat` before and after it was read, from `read_at_ns` on
    (`time.time_ns()`), and hashed to `sha256`. Best effort: a mark not kept costs a hash."""
    if is_racy(FileStat.of(stat), read_at_ns):
        return
    with contextlib.suppress(OSError):
        write_atomic(_mark(sha256), _text(path, stat), durable=False)
