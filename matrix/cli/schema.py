"""`rtx-matrix schema [manifest|lockfile]`: print a JSON Schema, e.g. for an editor."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from matrix.schemas import NAMES, schema_text


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of the manifest or the lockfile",
        description=(
            "Print a JSON Schema (2020-12). Point your editor at it, e.g. with the comment "
            "`# yaml-language-server: $schema=manifest.schema.json` at the top of a manifest."
        ),
    )
    parser.add_argument("name", nargs="?", choices=NAMES, default="manifest")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    text = schema_text(args.name)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
