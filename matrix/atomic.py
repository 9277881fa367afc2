"""Whole-file writes that readers never see half done, and file digests."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20

REPLACE_PATIENCE = 2.0 if sys.platform == "win32" else 0.0
"""Seconds to go on trying a rename over a file that another program holds open. Windows
refuses it (PermissionError) while any reader, virus scanner or indexer has the file open
without FILE_SHARE_DELETE, which is usually a moment; POSIX never refuses it for that, so a
PermissionError there is final at once."""
_FIRST_PAUSE = 0.01
# How `make_durable` opens a file: os.fsync is FlushFileBuffers on Windows, which needs a
# handle open for writing.
if sys.platform == "win32":
    _FSYNC_OPEN = os.O_RDWR | os.O_BINARY
else:
    _FSYNC_OPEN = os.O_RDONLY


def write_atomic(path: Path, data: bytes | memoryview | str, *, durable: bool = True) -> None:
    """Write to a temporary sibling, then rename over `path`.

    The file gets the usual mode (0666 less the umask), like any file this user creates: a
    lockfile is meant to be committed and shared. `durable` also fsyncs the file and its
    folder, so the new content survives power loss; caches that only cost a recomputation
    when lost skip that.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp = _create_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(folder)


def _create_sibling(path: Path) -> tuple[int, str]:
    """A new, empty `.<name>.<random>.tmp` beside `path`, open for writing. Not
    `tempfile.mkstemp`: that creates it with mode 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = str(path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp"))
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue


def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """`os.replace`, trying again for `REPLACE_PATIENCE` seconds while another program holds
    `target` open (Windows); then a PermissionError that says so."""
    deadline = time.monotonic() + REPLACE_PATIENCE
    pause = _FIRST_PAUSE
    while True:
        try:
            os.replace(source, target)
            return
        except PermissionError as error:
            left = deadline - time.monotonic()
            if left <= 0:
                if REPLACE_PATIENCE <= 0:
                    raise
                raise PermissionError(
                    error.errno,
                    f"cannot replace {os.fspath(target)}: another program keeps it open "
                    f"(tried for {REPLACE_PATIENCE:g} s)",
                ) from error
            time.sleep(min(pause, left))
            pause *= 2


def make_durable(path: Path) -> None:
    """fsync a file someone else wrote and renamed into place, and its folder: after this, a
    power loss keeps both its bytes and its name."""
    fd = os.open(path, _FSYNC_OPEN)
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
    """Make the renames into `folder` durable. Windows has no such call (a folder cannot be
    opened as a file): there NTFS journals the rename, and at worst a power loss keeps the
    old whole file (docs/platforms.md)."""
    if sys.platform == "win32":
        return
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
