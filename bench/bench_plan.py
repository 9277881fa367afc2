"""`rtx-matrix plan` on 100 models x 10 target sets x 2 weightless values (2,000 cells).

Target (issue 2): at most 0.5 s wall with warm ONNX facts. Measures the whole CLI process,
start-up included, for the table, --json and --format markdown, and prints the best and
median of N runs.

    python bench/bench_plan.py [--runs 7]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import modelgen  # noqa: E402

TARGET_SETS = {
    "ampere": ["sm80", "sm86"],
    "ada": ["sm89"],
    "blackwell": ["sm120", "sm121"],
    "wide": ["sm80", "sm86", "sm89", "sm120", "sm121"],
    "pair": ["sm86", "sm89"],
}
MODEL_TARGETS = ["default", "sm80", "sm86", "sm89", "sm120", *TARGET_SETS]


def write_project(folder: Path, models: int) -> Path:
    (folder / "models").mkdir()
    lines = ["version: 1", "targets:"]
    lines += [f"  {name}: [{', '.join(ccs)}]" for name, ccs in TARGET_SETS.items()]
    lines.append("models:")
    for i in range(models):
        modelgen.matmul_fp16(folder / "models" / f"m{i}.onnx", seed=i)
        lines += [
            f"  - name: m{i}",
            f"    onnx: models/m{i}.onnx",
            f"    targets: [{', '.join(MODEL_TARGETS)}]",
            "    weightless: [false, true]",
        ]
    manifest = folder / "rtx-matrix.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def time_run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"plan failed: {done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--models", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_project(folder, args.models)
        env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(folder / "cache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # timed as installed: see bench_overhead.py
        base = [sys.executable, "-m", "matrix", "plan", str(manifest), "--skip-rejected"]
        time_run([*base, "--json"], env)  # warms the facts and manifest caches
        cells = len(MODEL_TARGETS) * 2 * args.models
        print(
            f"{cells} cells, {args.models} models, warm facts, {args.runs} runs, "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
        )
        worst = 0.0
        formats = (
            ("plan --json", ["--json"]),
            ("plan (table)", []),
            ("plan markdown", ["--format", "markdown"]),
        )
        for label, extra in formats:
            times = [time_run(base + extra, env) for _ in range(args.runs)]
            worst = max(worst, min(times))
            print(f"  {label:14} best {min(times):.3f} s  median {statistics.median(times):.3f} s")
    print("target: <= 0.5 s wall:", "met" if worst <= 0.5 else "MISSED")
    return 0 if worst <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
