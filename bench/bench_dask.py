"""Dask benchmark: a 2-worker local cluster against the local WorkerPool -j2, same cells.

    python bench/bench_dask.py [--cells 8] [--layers 120] [--repeat 3]

Both sides build the same N real cells (a stack of fp16 convolutions, targets alternating
between the default set and sm86) into fresh folders. Timed: from handing the first cell over
to the last result, the pool's or the workers' child start-up included, the cluster's own
start-up not (a Dask cluster outlives one build). Target: Dask wall <= 1.2x local.
The numbers depend on what else runs on the machine: the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matrix.build.messages import BuildRequest  # noqa: E402
from matrix.manifest.types import BuilderOptions  # noqa: E402
from tests import modelgen  # noqa: E402

TARGET_RATIO = 1.2


def cells(folder: Path, model: Path, count: int) -> list[BuildRequest]:
    return [
        BuildRequest(
            cell_id=f"cell{i}", onnx=str(model), ccs=("sm86",) if i % 2 else (),
            use_gpu=False, weightless=False, options=BuilderOptions(), profiles=(),
            engine_path=str(folder / "engines" / f"cell{i}.engine"),
            log_path=str(folder / "engines" / "logs" / f"cell{i}.log"),
        )
        for i in range(count)
    ]


def timed(make_backend: Callable[[], Any], requests: list[BuildRequest]) -> float:
    started = time.perf_counter()
    with make_backend() as backend:
        for request in requests:
            backend.submit(request)
        results = list(backend.results())
    wall = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    if failed or len(results) != len(requests):
        raise SystemExit(f"bench cells failed: {failed}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--layers", type=int, default=120, help="conv layers per model")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; best counts")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from matrix.build.pools.dask_cluster import DaskBackend
    from matrix.build.pools.posix import WorkerPool

    with tempfile.TemporaryDirectory(prefix="bench-dask-") as scratch:
        root = Path(scratch)
        model = modelgen.slow_conv_stack(root / "model.onnx", layers=args.layers)
        local_walls, dask_walls = [], []
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=50) as cluster, \
                Client(cluster) as client:
            for run in range(args.repeat):
                local_dir, dask_dir = root / f"local{run}", root / f"dask{run}"
                local_walls.append(timed(lambda: WorkerPool(2, timeout=600),
                                         cells(local_dir, model, args.cells)))
                dask_walls.append(timed(lambda: DaskBackend(client, timeout=600),
                                        cells(dask_dir, model, args.cells)))
    local, dask = min(local_walls), min(dask_walls)
    ratio = dask / local
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.cells} cells, conv stack of {args.layers} layers, best of {args.repeat}")
    print(f"local WorkerPool -j2: {local:.2f} s   (runs: {_list(local_walls)})")
    print(f"Dask, 2 workers:      {dask:.2f} s   (runs: {_list(dask_walls)})")
    verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
    print(f"dask / local = {ratio:.2f}  (target <= {TARGET_RATIO}: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


def _list(walls: list[float]) -> str:
    return ", ".join(f"{w:.2f}" for w in walls)


if __name__ == "__main__":
    raise SystemExit(main())
