"""Whole-file writes that readers never see half done, and file digests."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes | memoryview | str, *, durable: bool = True) -> None:
    """Write to a temporary sibling, then rename over `path`.

    `durable` also fsyncs the file and its folder, so the new content survives power loss;
    caches that only cost a recomputation when lost skip that.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(folder)


def make_durable(path: Path) -> None:
    """fsync a file someone else wrote and renamed into place, and its folder: after this, a
    power loss keeps both its bytes and its name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_folder(path.parent)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this range of `fd` to disk now, without waiting.

    For a big file written in chunks: the disk then works while the writer goes on, and the
    fsync that makes it durable later has little left to wait for (bench/bench_large.py).
    Linux only (`sync_file_range`); elsewhere, and on any error, a no-op: it is a hint.
    """
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WRITE = 2


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]



def fsync_folder(folder: Path) -> None:
    """Make the renames into `folder` durable; not possible (nor needed) everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
