"""No-op build time: `rtx-matrix build` when every cell is already up to date.

Generates N tiny real ONNX models × 10 targets (N × 10 cells), builds them all for real once
(about 0.1 s per cell per core), then times complete `rtx-matrix build` processes that find
nothing to do. Targets (issue 14): 1,000 cells in at most 0.1 s wall, 10,000 in at most 0.6 s.
Two kinds of no-op are timed: the same no-op again, which replays the memo of the last one
(`matrix.lockfile.noop_memo`), and the first no-op after a change, which plans.

    python bench/bench_noop.py                  # 100 models: 1,000 cells
    python bench/bench_noop.py --models 1000    # 10,000 cells (first build ~20 min on 2 cores)
    python bench/bench_noop.py --baseline ../main-checkout   # old code against this one

With `--baseline`, runs of the code at that folder and of this checkout alternate on the same
project (each with a cache folder of its own), so both see the same machine load; both are
reported as best and median, with their ratio. The folder is kept between runs (the first
build is the slow part); `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = """\
targets:
  ampere: [sm80, sm86]
  ada: [sm86, sm89]
  blackwell: [sm89, sm120]
"""
CELL_TARGETS = "[default, sm75, sm80, sm86, sm89, sm120, sm121, ampere, ada, blackwell]"


def make_project(folder: Path, models: int) -> Path:
    from tests import modelgen

    manifest = folder / "rtx-matrix.yaml"
    if manifest.exists():
        return manifest
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "output: engines", TARGETS, "models:"]
    for i in range(models):
        modelgen.conv_fp32(folder / "models" / f"m{i:04d}.onnx", seed=i)
        lines += [f"  - name: m{i:04d}", f"    onnx: models/m{i:04d}.onnx",
                  f"    targets: {CELL_TARGETS}"]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


PLANNING = "RTX_MATRIX_BENCH_RUN"


def environment(code: Path, cache: Path) -> dict[str, str]:
    """Runs the rtx-matrix at `code` with caches in `cache`. As a user runs it: pip compiles
    the package's bytecode at install, and an editable install caches it on first use;
    PYTHONDONTWRITEBYTECODE (set in some sandboxes) would instead recompile every module on
    every run and time the compiler."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(code), "RTX_MATRIX_CACHE_DIR": str(cache)}


def rtx_matrix(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run from the project folder: `python -m` puts the current folder first on sys.path.
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True,
                          text=True, check=False, env=env, cwd=cwd)


def timed_noop(manifest: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = rtx_matrix(env, manifest.parent, "build", str(manifest))
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or "up to date" not in result.stdout:
        raise SystemExit(f"not a no-op run:\n{result.stdout}{result.stderr}")
    return elapsed, result.stdout.strip()


def report(label: str, times: list[float]) -> str:
    return (f"{label}: best {min(times):.3f} s, median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="models (× 10 cells each)")
    parser.add_argument("--runs", type=int, default=7, help="timed no-op runs (of each)")
    parser.add_argument("--dir", type=Path, help="project folder (default: /tmp/...)")
    parser.add_argument("--fresh", action="store_true", help="regenerate and rebuild")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with")
    args = parser.parse_args()
    folder = args.dir or Path(f"/tmp/rtx-matrix-bench-noop-{args.models}")
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    manifest = make_project(folder, args.models)
    variants = {"this": environment(ROOT, folder / ".cache-this")}
    # The first no-op after any change plans, and leaves the memo the next ones replay
    # (`matrix.lockfile.noop_memo`): a new RTX_MATRIX_ variable each run makes each one first.
    variants["this, planning"] = {**variants["this"], PLANNING: "0"}
    if args.baseline:
        variants = {"baseline": environment(args.baseline.resolve(), folder / ".cache-baseline"),
                    **variants}

    started = time.perf_counter()
    first = rtx_matrix(variants["this"], folder, "build", "-q", "-k", str(manifest))
    if first.returncode != 0:
        raise SystemExit(f"first build failed:\n{first.stdout}{first.stderr}")
    print(f"first build (or catch-up): {time.perf_counter() - started:.1f} s")

    for env in variants.values():  # warm: facts and plan caches, stamps, page cache
        timed_noop(manifest, env)
        timed_noop(manifest, env)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, env in variants.items():
            if PLANNING in env:
                env[PLANNING] = f"{os.getpid()}-{run}"  # never a memo of an earlier run
            times[name].append(timed_noop(manifest, env)[0])
    cells = args.models * 10
    print(f"{cells} cells up to date, {args.runs} runs of `rtx-matrix build` each, alternating; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, measured in times.items():
        print("  " + report(name, measured))
    if args.baseline:
        old, new = times["baseline"], times["this"]
        print(f"  this / baseline: best {min(new) / min(old):.2f}, "
              f"median {statistics.median(new) / statistics.median(old):.2f}")
    bare = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)
    print(f"(python startup alone: best {min(bare):.3f} s)")


if __name__ == "__main__":
    main()
