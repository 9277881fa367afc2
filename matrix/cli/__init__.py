"""`rtx-matrix`: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matrix import __version__
from matrix.cli import head_start

if TYPE_CHECKING:  # imported in the functions: `main` starts `build`'s worker first
    import argparse

    from matrix.errors import MatrixError

# Imported lazily: a no-op `build` must not pay for `plan`'s or `refit`'s imports.
SUBCOMMANDS = (
    "plan", "build", "status", "cache", "clean", "refit", "lock", "bundle", "select", "prepare",
    "schema",
)


def make_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or, when `argv` names a subcommand, only that one: importing every
    subcommand's module would cost every run ~40 ms before a build can start its workers."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="rtx-matrix",
        description=(
            "Plan, build and lock a matrix of NVIDIA TensorRT-RTX engines from a YAML manifest. "
            "Like make: a second build redoes only what changed."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rtx-matrix {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Top-level options come before the subcommand, so only a first word can name one.
    first = argv[0] if argv else None
    for name in (first,) if first in SUBCOMMANDS else SUBCOMMANDS:
        module = importlib.import_module(f"matrix.cli.{name}")
        module.add_parser(subparsers)
    return parser


def report_error(error: MatrixError) -> None:
    from matrix.errors import InputError

    if isinstance(error, InputError):
        for problem in error.problems:
            print(f"error: {str(problem).lstrip(': ')}", file=sys.stderr)
    else:
        print(f"error: {error}", file=sys.stderr)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but cell names may follow options (`build m.yaml -j2 CELL`):
    argparse stops filling a `nargs="*"` positional at the first option."""
    args, extras = parser.parse_known_args(argv)
    if extras and hasattr(args, "cells") and not any(e.startswith("-") for e in extras):
        args.cells = [*(args.cells or []), *extras]
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    console = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:
        if console:
            from matrix.lockfile import noop_memo

            said = noop_memo.replay(argv)
            if said is not None:
                sys.stdout.write(said)
                sys.stdout.flush()
                return 0
        head_start.start(argv)
        try:
            return _run(argv, console)
        finally:
            head_start.discard(head_start.take())  # not adopted by a worker pool
    except BrokenPipeError:
        # The reader left (`| head`): stop as a filter would, without a traceback, nor
        # another when Python flushes stdout on the way out (the recipe of the `signal`
        # module's documentation, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


BROKEN_PIPE = 141
"""What a shell reports for a program that SIGPIPE ended (128 + 13)."""


def _run(argv: Sequence[str], console: bool = False) -> int:
    from matrix.errors import MatrixError

    args = parse(make_parser(argv), argv)
    # A no-op started from the console is remembered (`matrix.lockfile.noop_memo`).
    args.memo_argv = tuple(argv) if console else None
    try:
        code: int = args.run(args)
    except MatrixError as error:
        report_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
