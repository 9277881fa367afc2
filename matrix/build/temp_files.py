"""Where a build writes an engine before it is whole, and cleaning up after builds that died.

A worker writes `.<engine name>.tmp-<pid>` beside the engine and renames it into place once
it is whole and checked, so a reader never sees half an engine; a worker killed mid-write
leaves its temporary behind for these functions to remove.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matrix.build.messages import BuildRequest


def temp_path(engine_path: str | os.PathLike[str], pid: int | None = None) -> Path:
    """The sibling a worker writes before renaming onto the engine: `.<name>.tmp-<pid>`."""
    path = Path(engine_path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def temp_files(engine_path: str | os.PathLike[str]) -> list[Path]:
    """Every worker's temp sibling of `engine_path`, for cleaning up after a killed worker."""
    path = Path(engine_path)
    prefix = f".{path.name}.tmp-"
    try:
        return [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except FileNotFoundError:
        return []


def remove_temp_files(request: BuildRequest) -> None:
    """Once the worker of a cell is gone: whatever it left half written."""
    for path in temp_files(request.engine_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temp_files(requests: Iterable[BuildRequest]) -> None:
    """Temporaries left by builds of a run killed with -9, whose pool could not clean up."""
    for request in requests:
        remove_temp_files(request)
