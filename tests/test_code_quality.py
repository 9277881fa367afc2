"""ruff and mypy are part of the test run, so CI's single test command checks them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is in the test extras")
def test_ruff_is_clean() -> None:
    result = run_tool("ruff", "check", "matrix", "tests", "bench", "manifests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run_tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


POSIX_BACKEND = ("matrix/build/pools/posix.py", "matrix/build/pools/posix_child.py")
"""The only modules allowed calls Windows lacks (posix_spawn, set_blocking, SIGKILL, ...)."""


def test_everything_but_the_posix_backend_type_checks_for_windows() -> None:
    """mypy with the Windows stubs: outside the posix pool no call is POSIX-only, and the
    Windows-only lines (which cannot run here) call what Windows has, as typeshed says."""
    modules = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "matrix").rglob("*.py")
        if str(path.relative_to(ROOT)) not in POSIX_BACKEND
    )
    result = run_tool(
        "mypy", "--platform", "win32", "--follow-imports=silent",
        "--cache-dir", str(ROOT / ".mypy_cache" / "win32"), *modules,
    )
    assert result.returncode == 0, result.stdout + result.stderr
