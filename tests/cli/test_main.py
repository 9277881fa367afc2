"""The `rtx-matrix` entry point: every subcommand in the help, only the one run is imported."""

from __future__ import annotations

import subprocess
import sys

from matrix.cli import SUBCOMMANDS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True)


def test_help_lists_every_subcommand() -> None:
    result = run("-m", "matrix", "--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")
              and not line.startswith("     ")]
    assert listed == list(SUBCOMMANDS)


def test_an_unknown_subcommand_names_the_real_ones() -> None:
    result = run("-m", "matrix", "bulid")
    assert result.returncode == 2
    assert "invalid choice: 'bulid' (choose from 'plan', 'build', 'status'" in result.stderr


def test_parsing_a_subcommand_imports_only_its_module() -> None:
    code = ("import sys; from matrix.cli import make_parser, parse; "
            "parse(make_parser(['build', 'm.yaml', '-j1']), ['build', 'm.yaml', '-j1']); "
            "print(sorted(m for m in sys.modules if m.startswith('matrix.cli.')))")
    result = run("-c", code)
    assert result.stdout == "['matrix.cli.build', 'matrix.cli.common', 'matrix.cli.head_start']\n"


def test_top_level_options_still_work_before_a_subcommand() -> None:
    result = run("-m", "matrix", "--version")
    assert result.returncode == 0 and result.stdout.startswith("rtx-matrix ")
