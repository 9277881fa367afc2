"""A cell handed to a local worker, and when its time runs out: shared by both local pools."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from matrix.build.messages import BuildRequest, BuildResult


@dataclass
class InFlight:
    request: BuildRequest
    handed_out: float
    oom_kills: int | None
    """The kernel's count of OOM kills at hand-out, to tell how a killed worker died
    (`matrix.build.oom`)."""
    started: float | None = None
    """When the worker said it began: a worker still starting up has not yet."""

    @property
    def since(self) -> float:
        return self.handed_out if self.started is None else self.started

    def expired(self, timeout: float | None, now: float) -> bool:
        return timeout is not None and now - self.since >= timeout


def until_next_timeout(cells: Iterable[InFlight], timeout: float | None) -> float | None:
    """Seconds until the first of `cells` runs out of time; None: no limit."""
    if timeout is None:
        return None
    since = min(cell.since for cell in cells)
    return max(0.0, since + timeout - time.monotonic())


def timed_out(cell: InFlight, timeout: float) -> BuildResult:
    """The result of a cell whose worker ran out of time (call once the worker is gone)."""
    from matrix.build.worker import failed

    return failed(cell.request, cell.since, f"timed out after {timeout:g} s")
