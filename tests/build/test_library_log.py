"""Reading the library's errors back from a cell's log file."""

from __future__ import annotations

from pathlib import Path

from matrix.build.library_log import last_error

LOG = """\
[11/25/2026-06:58:57] [TRT] [I] Input filename:   /m/a.onnx
[11/25/2026-06:58:57] [TRT] [E] first error
[11/25/2026-06:58:58] [TRT] [W] a warning
[11/25/2026-06:58:58] [TRT] [F] internal error
  spanning two lines
[11/25/2026-06:58:58] [TRT] [I] [MemUsageStats] Peak memory usage
"""


def test_the_last_error_or_internal_error_as_one_line(tmp_path: Path) -> None:
    log = tmp_path / "cell.log"
    log.write_text(LOG)
    assert last_error(str(log)) == "internal error spanning two lines"
    log.write_text(LOG.split("[11/25/2026-06:58:58] [TRT] [W]")[0])
    assert last_error(str(log)) == "first error"


def test_no_error_or_no_log_is_none(tmp_path: Path) -> None:
    log = tmp_path / "cell.log"
    log.write_text("[11/25/2026-06:58:57] [TRT] [I] Engine generation completed\n")
    assert last_error(str(log)) is None
    assert last_error(str(tmp_path / "missing.log")) is None
