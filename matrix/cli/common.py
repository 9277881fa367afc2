"""Arguments and set-up that several subcommands share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from matrix.plan.load import DEFAULT_MANIFEST, resolve_manifest

if TYPE_CHECKING:
    from matrix.lockfile.survey import Scope, Survey


def add_manifest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", nargs="?", help=f"manifest file (default: {DEFAULT_MANIFEST})")
    parser.add_argument(
        "--verify", action="store_true", help="hash every engine instead of trusting size and mtime"
    )


def scope_of(args: argparse.Namespace) -> Scope:
    from matrix.lockfile.survey import Scope

    return Scope(
        patterns=tuple(getattr(args, "cells", ()) or ()),
        shard=getattr(args, "shard", None),
        pool=getattr(args, "pool", None),
        shard_strategy=getattr(args, "shard_strategy", "balanced"),
    )


def survey_for(args: argparse.Namespace) -> Survey:
    """`survey` with what this command's arguments say (status has fewer than build)."""
    from matrix.lockfile.survey import survey

    return survey(
        resolve_manifest(args.manifest),
        scope_of(args),
        verify=args.verify,
        force=getattr(args, "force", False),
        device=getattr(args, "device", None),
        lock_output=getattr(args, "output", None),
    )
