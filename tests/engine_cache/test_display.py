"""What a run shows of the cache: download progress with its rate, the fetched cells'
lines, and the summary's `N built, M from cache (X MB)`."""

from __future__ import annotations

import io

from rich.console import Console

from matrix.build.executor import Outcome, Status
from matrix.build.messages import ProgressEvent
from matrix.build.progress import Batch, RichDisplay, outcome_line, print_summary


def test_a_download_shows_its_bytes_and_rate() -> None:
    display = RichDisplay(io.StringIO())
    display.batch = Batch(("a@sm86", "b@sm86"), {}, 2)
    display.event(ProgressEvent("a@sm86", "start"))
    display.started["a@sm86"] -= 0.5  # as if it started half a second ago
    display.running["a@sm86"].started -= 0.5
    display.event(ProgressEvent("a@sm86", "download", step=3_000_000, steps=8_000_000))
    console = Console(file=io.StringIO(), width=100)
    console.print(display._render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "fetching 0/2" in text
    assert "a@sm86" in text and "downloading 3.0 MB of 8.0 MB, 6.0 MB/s" in text


def test_fetched_cells_and_the_summary() -> None:
    fetched = Outcome("a@sm86", Status.FETCHED, 0.5, bytes=4_700_000)
    assert outcome_line(fetched) == (
        "fetched a@sm86 from the cache: 4.7 MB in 0.5 s (9.4 MB/s)"
    )
    out = io.StringIO()
    built = Outcome("b@sm86", Status.BUILT, 1.25)
    print_summary([built, fetched, Outcome("c", Status.UP_TO_DATE)], 2.0, False, out)
    assert out.getvalue() == (
        "summary: 1 built (1.2 s), 1 from cache (4.7 MB), 1 up to date, 0 failed; wall 2.0 s\n"
    )
