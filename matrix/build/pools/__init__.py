"""Where cells are built: interchangeable pools behind one `Pool` protocol.

- `posix`: the fast local pool on Linux and macOS (posix_spawn, one selector, no threads);
  its workers are `posix_child.Child`ren.
- `portable`: the local pool that also runs on Windows (subprocess, a reader thread per
  worker; `windows_job` ties its workers to the parent there). `RTX_MATRIX_WORKERS=portable`
  forces it on POSIX.
- `dask_cluster`: a Dask distributed cluster (`build --executor dask`); each Dask worker
  builds in a portable pool of one.

Each builds one cell per worker process at a time in `matrix.build.worker`, and fails only
that cell when its worker crashes, is killed or runs past its timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from typing_extensions import Self

    from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
    from matrix.build.pools.posix_child import Child

EventCallback = Callable[["ProgressEvent"], None]

WORKERS_ENV = "RTX_MATRIX_WORKERS"
LOCAL_KINDS = ("posix", "portable")


class Pool(Protocol):
    """Builds submitted cells; used as a context manager, which starts and ends its workers."""

    @property
    def jobs(self) -> int:
        """How many cells to keep in flight."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def submit(self, request: BuildRequest) -> None:
        """Queue one cell."""

    def results(self, on_event: EventCallback | None = None) -> Iterator[BuildResult]:
        """Each result as it finishes until every submitted cell has one; `on_event` is
        called from the iterating thread, a cell's `end` event before its result."""

    def shutdown(self) -> None:
        """Kill every worker and clean up after cells in flight; safe to call twice and
        from another thread."""


def local_kind() -> str:
    """Which local pool this process uses: `RTX_MATRIX_WORKERS`, else the platform's."""
    chosen = os.environ.get(WORKERS_ENV, "")
    if chosen in LOCAL_KINDS:
        return chosen
    return "portable" if sys.platform == "win32" else "posix"


def local_pool(
    jobs: int,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    started: Sequence[Child] = (),
) -> Pool:
    """A local pool of `jobs` workers (not yet entered), of `local_kind()`. `started`:
    workers `head_start` started already (it starts them only for the posix pool)."""
    if local_kind() == "portable":
        if started:
            raise ValueError("only the posix pool adopts workers started before it")
        from matrix.build.pools.portable import PortablePool

        return PortablePool(jobs, timeout, env)
    from matrix.build.pools.posix import WorkerPool

    return WorkerPool(jobs, timeout, env, started=started)


def ignore(event: ProgressEvent) -> None:
    del event
