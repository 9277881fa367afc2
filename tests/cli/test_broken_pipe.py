"""A reader that leaves early (`rtx-matrix plan | head -1`) ends the run quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "demo" / "rtx-matrix.yaml"


def test_a_closed_stdout_ends_the_run_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "matrix", "plan", str(DEMO)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before it writes a line: its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""
