"""No-op build time: `rtx-matrix build` when every cell is already up to date.

Generates N tiny real ONNX models × 10 targets (N × 10 cells), builds them all for real once
(about 0.1 s per cell per core), then times complete `rtx-matrix build` processes that find
nothing to do. Targets: 1,000 cells in at most 0.3 s wall, 10,000 in at most 2 s.

    python bench/bench_noop.py                  # 100 models: 1,000 cells
    python bench/bench_noop.py --models 1000    # 10,000 cells (first build ~10 min on 2 cores)

The folder is kept between runs (the first build is the slow part); `--fresh` starts over.
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


# As a user runs it: pip compiles the package's bytecode at install, and an editable install
# caches it on first use. PYTHONDONTWRITEBYTECODE (set in some sandboxes) would instead
# recompile every module on every run and time the compiler.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def rtx_matrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True,
                          text=True, check=False, env=ENV)


def timed_noop(manifest: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = rtx_matrix("build", str(manifest))
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or "up to date" not in result.stdout:
        raise SystemExit(f"not a no-op run:\n{result.stdout}{result.stderr}")
    return elapsed, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="models (× 10 cells each)")
    parser.add_argument("--runs", type=int, default=7, help="timed no-op runs")
    parser.add_argument("--dir", type=Path, help="project folder (default: /tmp/...)")
    parser.add_argument("--fresh", action="store_true", help="regenerate and rebuild")
    args = parser.parse_args()
    folder = args.dir or Path(f"/tmp/rtx-matrix-bench-noop-{args.models}")
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    manifest = make_project(folder, args.models)

    started = time.perf_counter()
    first = rtx_matrix("build", "-q", "-k", str(manifest))
    if first.returncode != 0:
        raise SystemExit(f"first build failed:\n{first.stdout}{first.stderr}")
    print(f"first build (or catch-up): {time.perf_counter() - started:.1f} s")

    timed_noop(manifest)  # warm: facts cache, stamps, page cache
    times = [timed_noop(manifest)[0] for _ in range(args.runs)]
    cells = args.models * 10
    print(f"{cells} cells up to date, {args.runs} runs of `rtx-matrix build`: "
          f"min {min(times):.3f} s, median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"(python startup alone: {time.perf_counter() - started:.3f} s)")


if __name__ == "__main__":
    main()
