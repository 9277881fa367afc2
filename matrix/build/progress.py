"""What a build run shows: live progress while it builds, a summary at the end.

With a terminal: a rich Live display (batch done/total with an ETA from the lock's
`build_seconds`, one line per running build with its builder phase, elapsed time, and the
bytes written while the engine is written). Without one: one plain line per finished cell,
and for a cell building longer than `HEARTBEAT` seconds a line that often with its elapsed
time and phase. rich is imported only when something is displayed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from matrix.build.executor import Outcome, Status
from matrix.build.messages import WRITING, ProgressEvent


@dataclass(frozen=True)
class Batch:
    """The cells a run is about to build, and how long each took last time (if known)."""

    cells: tuple[str, ...]
    expected_seconds: Mapping[str, float]
    jobs: int

    def expected(self, cell_id: str) -> float:
        known = list(self.expected_seconds.values())
        fallback = sum(known) / len(known) if known else 1.0
        return self.expected_seconds.get(cell_id, fallback)

    def eta(self, done: set[str], started: Mapping[str, float]) -> float:
        """Seconds left: expected time of unfinished cells, less what running ones have spent,
        spread over the workers."""
        now = time.monotonic()
        left = 0.0
        for cell in self.cells:
            if cell in done:
                continue
            spent = now - started[cell] if cell in started else 0.0
            left += max(self.expected(cell) - spent, 0.0)
        return left / max(1, min(self.jobs, len(self.cells) - len(done) or 1))


DOWNLOADING = "downloading"

HEARTBEAT = 30.0
"""Seconds between the plain display's lines about a cell still building."""


@dataclass
class Running:
    """What is known of a cell building now."""

    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    written: int = 0
    size: int = 0

    def note(self, event: ProgressEvent) -> None:
        if event.kind == "phase":
            self.phase = event.phase
        elif event.kind == "step" and event.steps:
            self.phase = f"{event.phase} {event.step}/{event.steps}"
        elif event.kind == "write":
            self.phase, self.written, self.size = event.phase, event.step, event.steps
        elif event.kind == "download":
            spent = time.monotonic() - self.started
            self.phase = (f"{DOWNLOADING} {size_text(event.step)} of {size_text(event.steps)}, "
                          f"{rate_text(event.step, spent)}")

    def describe(self, now: float) -> str:
        """`Writing engine 1.2 GiB of 2.0 GiB, 52.0 s`."""
        from matrix.build.memory import memory_text

        what = self.phase
        if self.size and self.phase == WRITING:
            what = f"{self.phase} {memory_text(self.written)} of {memory_text(self.size)}"
        return f"{what}, {seconds_text(now - self.started)}"


class Display:
    """Quiet: shows nothing while building but warnings (the summary still lists failures)."""

    _stderr = threading.Lock()

    def start(self, batch: Batch) -> None:
        del batch

    def warn(self, text: str) -> None:
        """A problem worth knowing that fails nothing (a rejected cache entry); any thread."""
        with self._stderr:
            print(f"warning: {text}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        del text

    def event(self, event: ProgressEvent) -> None:
        del event

    def outcome(self, outcome: Outcome) -> None:
        del outcome

    def stop(self) -> None:
        pass


class PlainDisplay(Display):
    """One line per finished cell, for logs and pipes: `[3/12] built m@sm86 in 1.2 s`; and
    every HEARTBEAT seconds a line per cell still building."""

    def __init__(self, out: TextIO, verbose: bool = False, heartbeat: float = HEARTBEAT) -> None:
        self.out = out
        self.verbose = verbose
        self.heartbeat = heartbeat
        self.total = 0
        self.done = 0
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, batch: Batch) -> None:
        self.total = len(batch.cells)
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="rtx-matrix-beat")
        self._ticker.start()

    def event(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "start":
                self.running[event.cell_id] = Running()
            elif event.kind == "retry":
                self.running.pop(event.cell_id, None)  # until it starts again
            elif event.cell_id in self.running:
                self.running[event.cell_id].note(event)
        if event.kind == "retry":
            self._line(f"      {event.cell_id}: {event.phase}")
        elif self.verbose and event.kind in ("start", "phase"):
            what = "started" if event.kind == "start" else f"phase {event.phase}"
            self._line(f"      {event.cell_id}: {what}")

    def outcome(self, outcome: Outcome) -> None:
        with self._lock:
            self.running.pop(outcome.cell_id, None)
        self.done += 1
        self._line(f"[{self.done}/{self.total}] {outcome_line(outcome)}")

    def note(self, text: str) -> None:
        self._line(text)

    def stop(self) -> None:
        self._stopped.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def _tick(self) -> None:
        while not self._stopped.wait(self.heartbeat):
            now = time.monotonic()
            with self._lock:
                lines = [
                    f"      {cell}: {running.describe(now)}"
                    for cell, running in sorted(self.running.items())
                    if now - running.started >= self.heartbeat
                ]
            for line in lines:
                self._line(line)

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class RichDisplay(Display):
    """rich Live: the batch with its ETA, and each running build with its builder phase."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = Console(file=out)
        self.verbose = verbose
        self.live: Any = None
        self.batch = Batch((), {}, 1)
        self.done: set[str] = set()
        self.started: dict[str, float] = {}
        self.running: dict[str, Running] = {}

    def start(self, batch: Batch) -> None:
        from rich.live import Live

        self.batch = batch
        self.live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._render,
        )
        self.live.start()

    def event(self, event: ProgressEvent) -> None:
        if event.kind == "start":
            self.started[event.cell_id] = time.monotonic()
            self.running[event.cell_id] = Running()
        elif event.kind == "retry":
            self.running.pop(event.cell_id, None)
            if self.live is not None:
                self.live.console.print(f"{event.cell_id}: {event.phase}", markup=False,
                                        highlight=False)
        elif event.cell_id in self.running:
            self.running[event.cell_id].note(event)

    def warn(self, text: str) -> None:
        if self.live is None:
            super().warn(text)
        else:
            self.live.console.print(f"[yellow]warning:[/] {text}", highlight=False)

    def note(self, text: str) -> None:
        if self.live is None:
            self.console.print(text, markup=False, highlight=False)
        else:
            self.live.console.print(text, markup=False, highlight=False)

    def outcome(self, outcome: Outcome) -> None:
        self.done.add(outcome.cell_id)
        self.running.pop(outcome.cell_id, None)
        if self.live is not None and (self.verbose or outcome.status is Status.FAILED):
            self.live.console.print(outcome_line(outcome), markup=False, highlight=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _render(self) -> Any:
        from rich.markup import escape
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        total, done = len(self.batch.cells), len(self.done)
        eta = self.batch.eta(self.done, self.started)
        fetching = any(r.phase.startswith(DOWNLOADING) for r in dict(self.running).values())
        verb = "fetching" if fetching else "building"
        table.add_row(f"[bold]{verb}[/] {done}/{total}", f"ETA {seconds_text(eta)}")
        now = time.monotonic()
        for cell, running in sorted(dict(self.running).items()):  # a copy: Live's thread
            table.add_row(f"  {cell}", f"[dim]{escape(running.describe(now))}[/]")
        return table


def make_display(quiet: bool, verbose: bool, out: TextIO | None = None) -> Display:
    out = out or sys.stdout
    if quiet:
        return Display()
    if out.isatty():
        return RichDisplay(out, verbose)
    return PlainDisplay(out, verbose)


def outcome_line(outcome: Outcome) -> str:
    if outcome.status is Status.BUILT:
        return f"built {outcome.cell_id} in {seconds_text(outcome.seconds)}"
    if outcome.status is Status.FETCHED:
        return (f"fetched {outcome.cell_id} from the cache: {size_text(outcome.bytes)} in "
                f"{seconds_text(outcome.seconds)} ({rate_text(outcome.bytes, outcome.seconds)})")
    if outcome.status is Status.FAILED:
        return f"FAILED {outcome.cell_id} after {seconds_text(outcome.seconds)}: {outcome.detail}"
    detail = f": {outcome.detail}" if outcome.detail else ""
    return f"{outcome.status} {outcome.cell_id}{detail}"


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def size_text(size: int) -> str:
    """Decimal units, as transfer rates are usually given: `12.3 MB`."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def rate_text(size: int, seconds: float) -> str:
    return f"{size_text(int(size / max(seconds, 1e-3)))}/s"


# ------------------------------------------------------------------------------- summary

ORDER = (Status.BUILT, Status.FETCHED, Status.UP_TO_DATE, Status.SKIPPED, Status.FAILED,
         Status.NOT_STARTED)


def summary_rows(outcomes: Sequence[Outcome]) -> list[tuple[str, int, str]]:
    """(status, cells, what they took: build time, or bytes fetched from the cache)."""
    rows = []
    for status in ORDER:
        chosen = [o for o in outcomes if o.status is status]
        if chosen or status in (Status.BUILT, Status.UP_TO_DATE, Status.FAILED):
            if status is Status.FETCHED:
                took = size_text(sum(o.bytes for o in chosen))
            else:
                seconds = sum(o.seconds for o in chosen)
                took = seconds_text(seconds) if seconds else ""
            rows.append((str(status), len(chosen), took))
    return rows


def print_summary(
    outcomes: Sequence[Outcome], elapsed: float, quiet: bool, out: TextIO | None = None
) -> None:
    """Counts and times per status, then every failed and skipped cell with its reason."""
    out = out or sys.stdout
    notable = [o for o in outcomes if o.status in (Status.FAILED, Status.SKIPPED)]
    if quiet:
        for outcome in notable:
            if outcome.status is Status.FAILED:
                print(outcome_line(outcome), file=sys.stderr)
        return
    if out.isatty():
        _rich_summary(outcomes, notable, elapsed, out)
        return
    counts = ", ".join(
        f"{count} {label}" + (f" ({took})" if took else "")
        for label, count, took in summary_rows(outcomes)
    )
    print(f"summary: {counts}; wall {seconds_text(elapsed)}", file=out)
    for outcome in notable:
        print(f"  {outcome_line(outcome)}", file=out)


def _rich_summary(
    outcomes: Sequence[Outcome], notable: Sequence[Outcome], elapsed: float, out: TextIO
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    table = Table(title=f"rtx-matrix build ({seconds_text(elapsed)} wall)")
    table.add_column("status")
    table.add_column("cells", justify="right")
    table.add_column("time or size", justify="right")
    for label, count, took in summary_rows(outcomes):
        style = "red" if label == str(Status.FAILED) and count else ""
        table.add_row(label, str(count), took or "-", style=style)
    console.print(table)
    if notable:
        details = Table("cell", "status", "reason", title="failed and skipped cells")
        for outcome in notable:
            style = "red" if outcome.status is Status.FAILED else "yellow"
            details.add_row(outcome.cell_id, str(outcome.status), outcome.detail, style=style)
        console.print(details)
