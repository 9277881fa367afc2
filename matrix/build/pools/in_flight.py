"""A cell handed to a local worker, and when its time runs out: shared by both local pools."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


class Holder(Protocol):
    """A local pool's worker: the cell it builds now, if any."""

    cell: InFlight | None


def take_frame(
    cell: InFlight | None, kind: str, payload: Any, emit: Callable[[Any], None]
) -> BuildResult | None:
    """One frame from the worker building `cell`: an event goes to `emit` (a `start` marks
    when the build began); a result is returned, for the pool to free its worker."""
    if kind == "event":
        if payload.kind == "start" and cell is not None:
            cell.started = time.monotonic()
        emit(payload)
        return None
    result: BuildResult = payload
    return result


def lost(worker: Holder, exit_code: int) -> Iterator[BuildResult]:
    """The result of the cell a worker held when its output ended (it died)."""
    from matrix.build.worker import died

    cell = worker.cell
    if cell is not None:
        yield died(cell.request, cell.since, exit_code, cell.oom_kills)


def expire(
    workers: Sequence[Holder], timeout: float | None, retire: Callable[[Any], int]
) -> Iterator[BuildResult]:
    """Retire each worker whose cell ran out of time; that cell's result."""
    if timeout is None:
        return
    now = time.monotonic()
    for worker in list(workers):
        cell = worker.cell
        if cell is not None and cell.expired(timeout, now):
            retire(worker)
            yield timed_out(cell, timeout)
