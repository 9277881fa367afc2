"""`rtx-matrix cache pull|push|status|gc`: the shared engine cache (matrix.engine_cache)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix.cli.common import add_cache_args, add_manifest_arg, cache_of, survey_for

if TYPE_CHECKING:
    from matrix.manifest.types import CacheSpec


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="fetch engines from, or push them to, the shared engine cache",
        description=(
            "The shared engine cache holds engines keyed by each cell's fingerprint, in a "
            "folder or any fsspec store (s3://, gs://, az://, https://). `build` uses it on "
            "its own; these commands fetch, upload, list and prune it directly."
        ),
    )
    actions = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    pull = actions.add_parser(
        "pull",
        help="fetch the engines the plan needs from the cache, building nothing",
        description=(
            "Fetch every stale cell's engine that the cache holds into the output folder, "
            "checked (sha256, size, engine header) before it takes its name, and write the "
            "lock as a build would. A folder cache's file you fetched before is not hashed "
            "again while its stat is unchanged. Exit 1 when some cells are not in the cache."
        ),
    )
    _cells(pull)
    pull.add_argument("--wait", type=float, default=0.0, metavar="S",
                      help="wait up to S seconds for a build of this output to end")
    verbosity = pull.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="say why each missing cell is missing")
    pull.set_defaults(run=run_pull)

    push = actions.add_parser(
        "push",
        help="upload the engines the lock names",
        description=(
            "Upload the engine of every up-to-date cell (the one the lock names, hashed "
            "first) with its record and builder log. Engines the cache has already are not "
            "sent again."
        ),
    )
    _cells(push)
    push.set_defaults(run=run_push)

    status = actions.add_parser(
        "status",
        help="per cell: present, missing or invalid in the cache, with sizes",
        description="What the cache holds for each buildable cell of the plan.",
    )
    _cells(status)
    status.add_argument("--verify", action="store_true",
                        help="read every present engine and check it as a fetch would, "
                        "always hashing it")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(run=run_status)

    gc = actions.add_parser(
        "gc",
        help="shrink a folder cache to a size, least recently used entries first",
        description=(
            "Delete the least recently used entries of a folder cache until it holds at "
            "most SIZE, and the leftovers of interrupted pushes. For object stores use "
            "their lifecycle rules."
        ),
    )
    add_manifest_arg(gc)
    gc.add_argument("--max-size", required=True, metavar="SIZE",
                    help="bytes, or a size such as 500MB, 20GiB")
    add_cache_args(gc, push=False)
    gc.set_defaults(run=run_gc)


def _cells(parser: argparse.ArgumentParser) -> None:
    add_manifest_arg(parser)
    parser.add_argument("cells", nargs="*", metavar="CELL",
                        help="only these cells: cell id, model name or glob (m@sm8*)")
    add_cache_args(parser, push=False)


def _spec(args: argparse.Namespace, manifest: CacheSpec | None) -> CacheSpec:
    from matrix.engine_cache.commands import require

    return require(cache_of(args, manifest))


def run_pull(args: argparse.Namespace) -> int:
    from matrix.build.executor import Status
    from matrix.build.progress import print_summary
    from matrix.engine_cache.commands import pull

    started = time.monotonic()
    args.verify = False
    state = survey_for(args)
    spec = _spec(args, state.plan.manifest.cache)
    if not state.freshness.stale:
        if not args.quiet:
            print(f"{len(state.freshness.cells)} cells up to date: nothing to pull")
        return 0
    outcomes = pull(state, spec, quiet=args.quiet, verbose=args.verbose, wait=args.wait,
                    resurvey=lambda: survey_for(args))
    missing = [o for o in outcomes if o.status is Status.NOT_STARTED]
    print_summary([o for o in outcomes if o not in missing], time.monotonic() - started,
                  args.quiet)
    for outcome in missing:
        reason = f" ({outcome.detail})" if args.verbose and outcome.detail else ""
        print(f"not in the cache: {outcome.cell_id}{reason}", file=sys.stderr)
    if missing:
        print(f"{len(missing)} cells not pulled: build them with `rtx-matrix build`",
              file=sys.stderr)
    return 1 if missing else 0


def run_push(args: argparse.Namespace) -> int:
    from matrix.build.progress import size_text
    from matrix.engine_cache.commands import push

    args.verify = False  # each engine is hashed as it is pushed
    state = survey_for(args)
    result = push(state, _spec(args, state.plan.manifest.cache))
    report = result.report
    for cell_id in result.stale:
        print(f"not pushed: {cell_id}: stale, no engine to push", file=sys.stderr)
    for problem in report.failed:
        print(f"not pushed: {problem}", file=sys.stderr)
    print(f"pushed {report.pushed} engines ({size_text(report.bytes)}), "
          f"{report.present} already in the cache")
    return 1 if report.failed else 0


def run_status(args: argparse.Namespace) -> int:
    from matrix.engine_cache.commands import status
    from matrix.engine_cache.config import display_url
    from matrix.engine_cache.report import entries_json, entry_lines

    verify, args.verify = args.verify, False
    state = survey_for(args)
    spec = _spec(args, state.plan.manifest.cache)
    entries = status(state, spec, verify)
    if args.json:
        print(json.dumps(entries_json(entries, display_url(spec.url)), indent=2))
    else:
        print("\n".join(entry_lines(entries, display_url(spec.url))))
    state.stamps.save()
    return 0


def run_gc(args: argparse.Namespace) -> int:
    from matrix.build.progress import size_text
    from matrix.engine_cache.commands import gc
    from matrix.errors import UsageError
    from matrix.manifest.loader import parse_size
    from matrix.plan.load import resolve_manifest

    max_bytes = parse_size(args.max_size)
    if max_bytes is None:
        raise UsageError(f"--max-size {args.max_size!r} is not a size (500MB, 20GiB, 4096)")
    report = gc(_spec(args, _manifest_cache(args, resolve_manifest(args.manifest))), max_bytes)
    print(f"removed {report.removed_entries} entries ({size_text(report.removed_bytes)}); "
          f"{report.kept_entries} entries left ({size_text(report.kept_bytes)})")
    return 0


def _manifest_cache(args: argparse.Namespace, manifest: Path) -> CacheSpec | None:
    """The manifest's cache when no URL is given on the command line or in the environment;
    a missing manifest is then no error (gc needs only the URL)."""
    import os

    from matrix.engine_cache.config import ENV_URL
    from matrix.manifest.loader import load_manifest

    if args.cache or os.environ.get(ENV_URL) or (not manifest.exists() and not args.manifest):
        return None
    return load_manifest(manifest).cache
