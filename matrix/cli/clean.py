"""`rtx-matrix clean`: delete engines (and their logs) that no lock entry names."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matrix.cli.common import add_manifest_arg
from matrix.lockfile.stamps import STATE_DIR, Stamps
from matrix.plan.load import resolve_manifest

SUFFIXES = (".engine", ".log")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "clean",
        help="delete engines under the output folder that the lockfile does not name",
    )
    add_manifest_arg(parser)
    parser.add_argument(
        "-o", "--output", metavar="LOCK", help="lockfile to keep (default: the manifest's)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from matrix.lockfile.io import read_lock
    from matrix.manifest.loader import load_manifest

    manifest = load_manifest(resolve_manifest(args.manifest))
    lock_path = Path(os.path.abspath(args.output or manifest.lock_path))
    lock = read_lock(lock_path)
    output = manifest.output.resolve()
    keep: set[Path] = set()
    for entry in lock.engines.values() if lock else ():
        engine = (lock_path.parent / entry.path).resolve()
        keep.update({engine, engine.with_suffix(".log")})
    doomed = sorted(path for path in candidates(output) if path not in keep)
    verb = "would delete" if args.dry_run else "deleted"
    stamps = Stamps.load(output)
    for path in doomed:
        if not args.dry_run:
            path.unlink(missing_ok=True)
            stamps.forget(path)
        print(f"{verb} {os.path.relpath(path)}")
    if not args.dry_run:
        stamps.save()
        remove_empty_folders(output)
    plural = "" if len(doomed) == 1 else "s"
    done = "would be deleted" if args.dry_run else "deleted"
    print(f"{len(doomed)} file{plural} {done}")
    return 0


def candidates(output: Path) -> Iterator[Path]:
    """Engine and log files (temporaries of killed builds too) outside the state folder."""
    if not output.is_dir():
        return
    for folder, subfolders, files in os.walk(output):
        subfolders[:] = [name for name in subfolders if name != STATE_DIR]
        for name in files:
            if name.endswith(SUFFIXES) or ".engine.tmp-" in name:
                yield Path(folder, name).resolve()


def remove_empty_folders(output: Path) -> None:
    for folder, _, _ in sorted(os.walk(output), key=lambda item: -len(item[0])):
        path = Path(folder)
        if path != output and path.name != STATE_DIR:
            with contextlib.suppress(OSError):  # not empty
                path.rmdir()
