"""A cache folder on a local disk, reached with `os` calls instead of through fsspec.

Importing fsspec costs ~0.14 s on this project's 2-core machine (asyncio and its
compressors come along), which is more than fetching every engine of a warm clone
(bench/bench_cache.py). A local folder needs none of it: `Folder` has the few methods of
fsspec's `AbstractFileSystem` the store calls, with the same signatures and errors (a
missing file is FileNotFoundError, anything else an OSError), so the store cannot tell.
Every other URL goes through fsspec.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import IO, Any


class Folder:
    def cat_file(self, path: str) -> bytes:
        with open(path, "rb") as source:
            return source.read()

    def open(self, path: str, mode: str = "rb", block_size: int | None = None) -> IO[Any]:
        return open(path, mode)  # the caller closes it, as with fsspec

    def info(self, path: str) -> dict[str, Any]:
        return _info(os.stat(path))

    def find(self, path: str, detail: bool = True) -> dict[str, dict[str, Any]]:
        """Every file under `path`, by path; FileNotFoundError when `path` is not there."""
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        found = {}
        for folder, _, names in os.walk(path):
            for name in names:
                file = f"{folder}/{name}"
                try:
                    found[file] = _info(os.stat(file))
                except FileNotFoundError:
                    continue  # removed meanwhile (another run's gc)
        return found

    def put_file(self, local_path: str, path: str) -> None:
        shutil.copyfile(local_path, path)

    def pipe_file(self, path: str, data: bytes) -> None:
        with open(path, "wb") as target:
            target.write(data)

    def rm_file(self, path: str) -> None:
        os.unlink(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    def mv(self, source: str, target: str) -> None:
        os.replace(source, target)

    def _parent(self, path: str) -> str:
        return os.path.dirname(path)

    def _strip_protocol(self, path: str) -> str:
        return path


def _info(status: os.stat_result) -> dict[str, Any]:
    kind = "directory" if stat.S_ISDIR(status.st_mode) else "file"
    return {"size": status.st_size, "mtime": status.st_mtime, "type": kind}
