"""Parallel builds: `rtx-matrix build -jN` for N from 1 up to the core count, against N bare
processes calling tensorrt_rtx directly, the same cells split between them.

    python bench/bench_workers.py [--cells 8] [--layers 220] [--jobs 1 2 4] [--repeat 1]
                                  [--pools posix portable]

Both sides are whole processes building the same cells (stacks of convolutions, no CC set,
about 1 s each with the default layers): rtx-matrix with `--force -q` (planning, worker start,
logs, fsyncs and lock writes all count), the bare side as N copies of bench_overhead.py's
minimal script side by side, copy i building every N-th cell from the i-th: what the cores
allow at best. Each row gives wall seconds (best of --repeat), the speed-up over the same
side's -j1, and rtx-matrix over bare, for each local pool (`--pools`, RTX_MATRIX_WORKERS),
side by side in every repetition. Then a fresh pool's time to return one tiny cell.
The numbers depend on what else runs on the machine: the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_overhead import DIRECT, make_project  # the same minimal script and cells

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def default_jobs(cores: int) -> list[int]:
    """1, 2, 4, ... and the core count itself."""
    jobs = {cores}
    n = 1
    while n < cores:
        jobs.add(n)
        n *= 2
    return sorted(jobs)


def environment(folder: Path) -> dict[str, str]:
    # As a user runs it: pip compiles bytecode at install (PYTHONDONTWRITEBYTECODE, set in
    # some sandboxes, would recompile every module on every run).
    env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(folder / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed_together(commands: list[list[str]], env: dict[str, str]) -> float:
    """Wall seconds of `commands` started at once, until the last ends."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for c in commands
    ]
    for process in processes:
        if process.wait():
            raise SystemExit(f"{process.args!r} failed")
    return time.perf_counter() - started


def bare_commands(models: list[Path], out: Path, jobs: int) -> list[list[str]]:
    pairs = [[str(p) for m in models[i::jobs] for p in (m, out / m.stem)] for i in range(jobs)]
    return [[sys.executable, "-c", DIRECT, *cells] for cells in pairs]


def pool_startup(folder: Path, env: dict[str, str]) -> float:
    """A fresh local pool returning one tiny cell, in a process of its own (best of 3)."""
    from tests import modelgen

    tiny = modelgen.slow_conv_stack(folder / "tiny.onnx", layers=1)
    script = (
        "import sys; from matrix.build.messages import BuildRequest; "
        "from matrix.build.pools import local_pool; from matrix.manifest.types import "
        "BuilderOptions\n"
        "with local_pool(1) as pool:\n"
        "    pool.submit(BuildRequest(cell_id='tiny', onnx=sys.argv[1], ccs=(), use_gpu=False,"
        " weightless=False, options=BuilderOptions(), profiles=(), engine_path=sys.argv[2],"
        " log_path=sys.argv[2] + '.log'))\n"
        "    assert all(r.ok for r in pool.results())\n"
    )
    command = [sys.executable, "-c", script, str(tiny), str(folder / "tiny.engine")]
    return min(timed_together([command], env) for _ in range(3))


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--layers", type=int, default=220, help="conv layers per model (~1 s)")
    parser.add_argument("--jobs", type=int, nargs="+", default=default_jobs(cores),
                        help=f"-j values (default: 1, 2, 4, ... up to the {cores} cores)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pools", nargs="+", choices=("posix", "portable"),
                        default=["posix", "portable"], help="local pools to time, side by side")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest, models = make_project(folder / "project", args.cells, args.layers)
        env = environment(folder)
        build = [sys.executable, "-m", "matrix", "build", "--force", "-q", str(manifest)]
        pooled = {pool: {**env, "RTX_MATRIX_WORKERS": pool} for pool in args.pools}
        for pool_env in pooled.values():  # warms the facts cache and the page cache
            timed_together([[*build, "-j1"]], pool_env)
        for jobs in args.jobs:
            ours: dict[str, list[float]] = {pool: [] for pool in pooled}
            bare = []
            for _ in range(args.repeat):
                for pool, pool_env in pooled.items():
                    ours[pool].append(timed_together([[*build, f"-j{jobs}"]], pool_env))
                bare.append(timed_together(bare_commands(models, folder, jobs), env))
            rows.extend((pool, jobs, min(ours[pool]), min(bare)) for pool in pooled)
        startup = {pool: pool_startup(folder, pool_env) for pool, pool_env in pooled.items()}
    print(f"cells: {args.cells} x slow_conv_stack(layers={args.layers}) on {cores} cores, "
          f"best of {args.repeat}")
    print("pool       -j   rtx-matrix  speed-up   N bare processes  speed-up   rtx-matrix / bare")
    first = {pool: (ours_s, bare_s) for pool, _, ours_s, bare_s in reversed(rows)}
    for pool, jobs, ours_s, bare_s in rows:
        ours1, bare1 = first[pool]
        print(f"{pool:<8} {jobs:5d} {ours_s:10.2f} s {ours1 / ours_s:8.2f}x {bare_s:16.2f} s "
              f"{bare1 / bare_s:8.2f}x {ours_s / bare_s:15.2f}")
    if args.jobs[0] != 1:
        print("(speed-ups are over the first -j given, not over -j1)")
    print("fresh pool + one tiny cell: "
          + ", ".join(f"{pool} {seconds:.2f} s" for pool, seconds in startup.items()))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
