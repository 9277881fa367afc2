"""`rtx-matrix build -j1` against a minimal script calling tensorrt_rtx directly (issue 3).

Both are whole processes building the same N cells (a stack of convolutions, ~0.7 s each,
no CC set), so interpreter start-up, imports, planning, worker start, logs and lock writes
all count against rtx-matrix. Target: at most 5 % slower. The two alternate, best of --repeat.

    python bench/bench_overhead.py [--cells 8] [--layers 120] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIRECT = """
import sys, tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.WARNING)
for onnx, engine in zip(sys.argv[1::2], sys.argv[2::2]):
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(onnx)
    blob = builder.build_serialized_network(network, builder.create_builder_config())
    with open(engine, "wb") as out:
        out.write(blob)
"""


def make_project(folder: Path, cells: int, layers: int) -> tuple[Path, list[Path]]:
    from tests import modelgen

    models = [
        modelgen.slow_conv_stack(folder / f"m{i}.onnx", layers=layers, seed=i) for i in range(cells)
    ]
    lines = ["version: 1", "models:"]
    for i in range(cells):
        lines += [f"  - name: m{i}", f"    onnx: m{i}.onnx", "    targets: [default]"]
    manifest = folder / "rtx-matrix.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, models


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest, models = make_project(folder, args.cells, args.layers)
        env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(folder / "cache")}
        ours = [sys.executable, "-m", "matrix", "build", "-j1", "--force", "-q", str(manifest)]
        pairs = [str(p) for m in models for p in (m, folder / f"{m.stem}.direct.engine")]
        direct = [sys.executable, "-c", DIRECT, *pairs]
        timed(ours, env)  # warms the facts cache and the page cache for both
        mine, theirs = [], []
        for _ in range(args.repeat):
            theirs.append(timed(direct, env))
            mine.append(timed(ours, env))
    overhead = min(mine) / min(theirs) - 1
    print(f"{args.cells} cells, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"  direct tensorrt_rtx script  best {min(theirs):.2f} s  ({[round(t, 2) for t in theirs]})"
    )
    print(f"  rtx-matrix build -j1        best {min(mine):.2f} s  ({[round(t, 2) for t in mine]})")
    print(
        f"  overhead {overhead * 100:+.1f} % (target <= 5 %):",
        "met" if overhead <= 0.05 else "MISSED",
    )
    return 0 if overhead <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
