"""What a build shows while it runs: phases, elapsed time, bytes written, retries."""

from __future__ import annotations

import io
import re
import time

from matrix.build.executor import Outcome, Status
from matrix.build.messages import WRITING, ProgressEvent
from matrix.build.progress import Batch, PlainDisplay, Running

GiB = 1 << 30


def test_a_running_cell_reads_phase_and_time() -> None:
    running = Running(started=time.monotonic() - 52)
    running.note(ProgressEvent("m@sm86", "phase", phase="Building engine"))
    assert running.describe(running.started + 52) == "Building engine, 52.0 s"
    running.note(ProgressEvent("m@sm86", "step", phase="Timing tactics", step=3, steps=8))
    assert running.describe(running.started + 60) == "Timing tactics 3/8, 1 min 00 s"
    running.note(ProgressEvent("m@sm86", "write", phase=WRITING, step=GiB + GiB // 5,
                               steps=2 * GiB))
    assert running.describe(running.started + 52) == "Writing engine 1.2 GiB of 2.0 GiB, 52.0 s"


def test_plain_display_tells_of_long_builds_and_retries() -> None:
    out = io.StringIO()
    display = PlainDisplay(out, heartbeat=0.05)
    display.start(Batch(("big@default", "small@sm86"), {}, 2))
    display.event(ProgressEvent("big@default", "start"))
    display.event(ProgressEvent("big@default", "write", phase=WRITING, step=GiB, steps=2 * GiB))
    display.event(ProgressEvent("small@sm86", "retry",
                                phase="killed: out of memory (this build needed about 200 MiB); "
                                      "retrying alone"))
    time.sleep(0.3)
    display.outcome(Outcome("big@default", Status.BUILT, 1.0))
    time.sleep(0.15)  # a finished cell gets no more lines
    display.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == ("      small@sm86: killed: out of memory (this build needed about "
                        "200 MiB); retrying alone")
    assert re.fullmatch(r"      big@default: Writing engine 1\.0 GiB of 2\.0 GiB, 0\.\d s",
                        lines[1])
    assert lines[-1] == "[1/2] built big@default in 1.0 s"
