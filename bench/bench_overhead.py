"""`rtx-matrix build -j1` against a minimal script calling tensorrt_rtx directly (issue 3).

Both are whole processes building the same N cells (stacks of convolutions, no CC set), so
interpreter start-up, imports, planning, worker start, logs, fsyncs and lock writes all count
against rtx-matrix. Target: at most 5 % slower. The two alternate; best of --repeat.

Each size is split into what the tool adds once per run (wall time outside the builds: for
rtx-matrix, the wall minus the `build_seconds` its lock records) and what it adds inside each
cell's build, so the result carries over to other cell sizes: the fixed part is what makes
the target out of reach for a batch of only a few seconds.

    python bench/bench_overhead.py [--cells 8] [--layers 120 360] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIRECT = """
import sys, time, tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.WARNING)
for onnx, engine in zip(sys.argv[1::2], sys.argv[2::2]):
    started = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(onnx)
    blob = builder.build_serialized_network(network, builder.create_builder_config())
    with open(engine, "wb") as out:
        out.write(blob)
    print("cell", time.perf_counter() - started)
"""
"""The minimal script: one process, one library import, then each build in turn."""


def make_project(folder: Path, cells: int, layers: int) -> tuple[Path, list[Path]]:
    from tests import modelgen

    folder.mkdir(parents=True, exist_ok=True)
    models = [
        modelgen.slow_conv_stack(folder / f"m{i}.onnx", layers=layers, seed=i) for i in range(cells)
    ]
    lines = ["version: 1", "models:"]
    for i in range(cells):
        lines += [f"  - name: m{i}", f"    onnx: m{i}.onnx", "    targets: [default]"]
    manifest = folder / "rtx-matrix.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, models


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def measure(folder: Path, cells: int, layers: int, repeat: int) -> dict[str, float]:
    manifest, models = make_project(folder, cells, layers)
    # As a user runs it: pip compiles the package's bytecode at install, and an editable install
    # caches it on first use. PYTHONDONTWRITEBYTECODE (set in some sandboxes) would instead
    # recompile every module on every run and time the compiler.
    env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(folder / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ours = [sys.executable, "-m", "matrix", "build", "-j1", "--force", "-q", str(manifest)]
    pairs = [str(p) for m in models for p in (m, folder / f"{m.stem}.direct.engine")]
    direct = [sys.executable, "-c", DIRECT, *pairs]
    timed(ours, env)  # warms the facts cache and the page cache for both
    lock = manifest.with_suffix(".lock")
    mine, theirs, mine_in, theirs_in = [], [], [], []
    for _ in range(repeat):
        wall, out = timed(direct, env)
        theirs.append(wall)
        theirs_in.append(sum(float(line.split()[1]) for line in out.splitlines()))
        wall, _ = timed(ours, env)
        mine.append(wall)
        engines = json.loads(lock.read_text())["engines"].values()
        mine_in.append(sum(entry["build_seconds"] for entry in engines))
    return {
        "direct": min(theirs),
        "ours": min(mine),
        "direct_fixed": min(w - b for w, b in zip(theirs, theirs_in, strict=True)),
        "ours_fixed": min(w - b for w, b in zip(mine, mine_in, strict=True)),
        "direct_cell": min(theirs_in) / cells,
        "ours_cell": min(mine_in) / cells,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=[120, 360],
        help="conv layers per model, one run each (default: ~0.35 s and ~1.1 s cells here)",
    )
    # This VM's runs vary by 5-10 %, and only upwards: the best of fewer runs is partly noise.
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"{args.cells} cells per run, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    met = True
    with tempfile.TemporaryDirectory() as tmp:
        for layers in args.layers:
            m = measure(Path(tmp) / f"l{layers}", args.cells, layers, args.repeat)
            overhead = m["ours"] / m["direct"] - 1
            met = met and overhead <= 0.05
            per_cell = m["ours_cell"] / m["direct_cell"] - 1
            print(
                f"  cells of {m['direct_cell']:.2f} s: direct best {m['direct']:.2f} s, "
                f"rtx-matrix -j1 best {m['ours']:.2f} s: {overhead * 100:+.1f} % "
                f"({'met' if overhead <= 0.05 else 'MISSED'}, target <= 5 %)"
            )
            print(
                f"    once per run: {m['ours_fixed']:.2f} s outside the builds "
                f"(direct {m['direct_fixed']:.2f} s); inside each build: {per_cell * 100:+.1f} %"
            )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
