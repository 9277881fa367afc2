"""The library's log format, as its logger prints it to a cell's log file.

`[11/25/2026-06:58:57] [TRT] [E] message`, with the severity letter F (internal error), E, W,
I or V. Read back for the one-line error of a failed cell: by the builder when the library
refuses something, and by the pool when a worker died mid-build, whose log is all that is
left of what the library said.
"""

from __future__ import annotations

import re

from matrix.build.messages import one_line

_ERROR = re.compile(r"^\[[^]\n]*\] \[TRT\] \[[EF]\] (.*?)(?=^\[|\Z)", re.MULTILINE | re.DOTALL)
"""An ERROR or INTERNAL_ERROR message, up to the next message (it may span lines)."""
_WEIGHTS = re.compile(
    r"^\[[^]\n]*\] \[TRT\] \[I\] Total Weights Memory: (\d+) bytes$", re.MULTILINE
)
"""The builder's INFO report of the engine's weight bytes, logged once per build (1.7.1)."""


def last_error(log_path: str) -> str | None:
    """The last error the library logged to `log_path`, as one line; None if none or no log."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            text = log.read()
    except OSError:
        return None
    errors = _ERROR.findall(text)
    return one_line(errors[-1]) if errors else None


def weights_bytes(log_path: str) -> int | None:
    """The weight bytes the library reported for the engine it built; None when it did not.

    On a CPU-only host this log line is the one place the library states an engine's weight
    size: the engine statistics (`ICudaEngine.get_engine_stat`) need the engine deserialized,
    which needs a CUDA device (docs/tensorrt-rtx.md).
    """
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            found = _WEIGHTS.findall(log.read())
    except OSError:
        return None
    return int(found[-1]) if found else None

