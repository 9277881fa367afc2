"""Whole-file writes that readers never see half done, and file digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
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
