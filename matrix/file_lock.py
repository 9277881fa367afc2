"""An exclusive lock on a file, held by one process at a time, on POSIX and on Windows.

`build` holds one on its output folder (`<output>/.rtx-matrix/lock`) so two runs never write
the same engines or lockfile. The operating system drops the lock when its holder dies, so a
killed run never leaves the folder locked. Not the filelock package: its import (~12 ms) sat
between the plan and the first build of every run (bench/bench_overhead.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

POLL = 0.05
"""Seconds between tries while waiting for another holder."""


class Busy(Exception):
    """Another process holds the lock and did not let go in time."""


if sys.platform == "win32":  # pragma: no cover - Windows cannot be run here (README)
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # locks byte 0, even past the end
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def file_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing), waiting up to `wait` seconds;
    raises `Busy` after that."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(fd):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Busy(str(path))
            time.sleep(min(POLL, left))
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
