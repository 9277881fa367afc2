"""A cold plan's inspection of a model with about 1 GB of weights embedded in the ONNX file.

A fresh process with an empty facts cache runs `FactsCache.get` on the model (hashing it to
look it up by content, then inspecting it), each round against `--baseline DIR` (another
checkout of rtx-matrix) when given, side by side; best and median of the rounds.

    python bench/bench_inspect_embedded.py [--size-mb 960] [--rounds 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import modelgen  # noqa: E402

CHILD = """
import shutil, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from matrix.facts.cache import FactsCache
shutil.rmtree(sys.argv[3], ignore_errors=True)
start = time.perf_counter()
FactsCache(Path(sys.argv[3])).get(Path(sys.argv[2]))
print(f"{time.perf_counter() - start:.3f}")
"""


def timed(root: Path, model: Path, cache: Path) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(model), str(cache)],
                         capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=960)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = modelgen.mlp_fp32(Path(folder) / "big.onnx",
                                  features=args.size_mb * 1_000_000 // 64)
        aged = time.time() - 10  # out of the racy window, as a checked-out model is
        os.utime(model, (aged, aged))
        print(f"model: {model.stat().st_size / 1e6:.0f} MB, weights embedded")
        sides = {"this checkout": ROOT}
        if args.baseline:
            sides["baseline"] = args.baseline.resolve()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, root in sides.items():
                times[name].append(timed(root, model, Path(folder) / "facts"))
        for name, runs in times.items():
            print(f"{name:14}: best {min(runs):.2f} s, median {statistics.median(runs):.2f} s "
                  f"({len(runs)} rounds)")
        if args.baseline:
            ours, theirs = times["this checkout"], times["baseline"]
            print(f"  => {min(ours) / min(theirs):.2f}x the baseline (median "
                  f"{statistics.median(ours) / statistics.median(theirs):.2f}x)")


if __name__ == "__main__":
    main()
