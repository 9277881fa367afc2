"""Worker-pool benchmark: overhead against direct library calls, and -j2 over -j1.

    python bench/bench_workers.py [--cells 8] [--layers 8] [--repeat 1]

(1) overhead: `WorkerPool(jobs=1)` over N similar cells against a minimal script that calls
    tensorrt_rtx directly in one process for the same cells (target: at most 5 % slower);
(2) parallelism: `-j2` throughput over `-j1` for the same cells (target: at least 1.8x on
    2 cores; one build uses one core), next to two direct processes side by side: the most
    the cores give when others share them;
(3) start-up: time for a fresh pool to return its first tiny cell (the process started,
    Python and the library imported, one build).
Each variant runs as its own Python process, so interpreter start and imports count for all.
The numbers depend on what else runs on the machine: the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_overhead import DIRECT  # the same minimal script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_models(folder: Path, cells: int, layers: int) -> list[Path]:
    from tests import modelgen

    return [modelgen.slow_conv_stack(folder / f"m{i}.onnx", layers=layers, seed=i)
            for i in range(cells)]


def run_pool(models: list[Path], out: Path, jobs: int) -> float:
    """Child-process entry: build every model with a WorkerPool; returns wall seconds."""
    from matrix.build.messages import BuildRequest
    from matrix.build.pools import posix as workers
    from matrix.manifest.types import BuilderOptions

    started = time.perf_counter()
    with workers.WorkerPool(jobs=jobs) as pool:
        for model in models:
            pool.submit(BuildRequest(
                cell_id=model.stem, onnx=str(model), ccs=(), use_gpu=False, weightless=False,
                options=BuilderOptions(), profiles=(), engine_path=str(out / f"{model.stem}.e"),
                log_path=str(out / "logs" / f"{model.stem}.log")))
        results = list(pool.results(lambda event: None))
    assert all(r.ok for r in results), results
    for result in results:
        print("cell", result.seconds)
    return time.perf_counter() - started


def timed(command: list[str], cpu: list[float] | None = None,
          cells: list[float] | None = None) -> float:
    """Wall seconds of `command`; its CPU seconds (workers included) appended to `cpu`, the
    seconds of each cell it printed to `cells`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    output = subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if cells is not None:
        cells.extend(float(line.split()[1]) for line in output.stdout.splitlines()
                     if line.startswith("cell "))
    return wall


def timed_parallel(commands: list[list[str]]) -> float:
    """Wall seconds of `commands` run at the same time: what two cores allow at best."""
    started = time.perf_counter()
    for process in [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL) for c in commands]:
        if process.wait():
            raise SystemExit(f"{process.args!r} failed")
    return time.perf_counter() - started


def pool_command(models: list[Path], out: Path, jobs: int) -> list[str]:
    return [sys.executable, __file__, "--child", str(jobs), str(out), *map(str, models)]


def best(times: list[float]) -> float:
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--layers", type=int, default=220, help="conv layers per model (~1 s)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = make_models(folder / "models", args.cells, args.layers)
        tiny = make_models(folder / "tiny", 1, 1)
        direct, j1, j2, ceiling = [], [], [], []
        direct_cpu: list[float] = []
        j1_cpu: list[float] = []
        direct_cells: list[float] = []
        j1_cells: list[float] = []
        for _ in range(args.repeat):
            pairs = [str(a) for m in models for a in (m, folder / f"direct-{m.stem}.e")]
            direct.append(timed([sys.executable, "-c", DIRECT, *pairs], direct_cpu, direct_cells))
            j1.append(timed(pool_command(models, folder / "j1", 1), j1_cpu, j1_cells))
            j2.append(timed(pool_command(models, folder / "j2", 2)))
            halves = [[str(a) for m in models[i::2] for a in (m, folder / f"par-{m.stem}.e")]
                      for i in (0, 1)]
            ceiling.append(timed_parallel([[sys.executable, "-c", DIRECT, *half]
                                           for half in halves]))
        startup = best([timed(pool_command(tiny, folder / "tiny-out", 1)) for _ in range(3)])
    d, one, two = best(direct), best(j1), best(j2)
    print(f"cells: {args.cells} x slow_conv_stack(layers={args.layers}), "
          f"{d / args.cells:.2f} s per build")
    print(f"(1) direct {d:.2f} s, WorkerPool -j1 {one:.2f} s: overhead "
          f"{100 * (one - d) / d:+.1f} % (target <= 5 %)")
    dc, pc = best(direct_cpu), best(j1_cpu)
    print(f"    CPU seconds (less sensitive to a busy machine): direct {dc:.2f}, -j1 {pc:.2f}: "
          f"{100 * (pc - dc) / dc:+.1f} %")
    dm, pm = statistics.median(direct_cells), statistics.median(j1_cells)
    n = args.cells
    fixed = min(wall - sum(j1_cells[i * n:(i + 1) * n]) for i, wall in enumerate(j1))
    print(f"    median cell: direct {dm:.3f} s, in a worker {pm:.3f} s "
          f"({100 * (pm - dm) / dm:+.1f} %); the pool's fixed cost (start, imports, stop) "
          f"{fixed:.2f} s")
    print(f"(2) -j1 {one:.2f} s, -j2 {two:.2f} s: speed-up {one / two:.2f}x (target >= 1.8x)")
    print(f"    reference: the same cells as two direct processes side by side "
          f"{best(ceiling):.2f} s, {d / best(ceiling):.2f}x over one: what the cores allow")
    print(f"(3) fresh pool + one tiny cell: {startup:.2f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        jobs, out = int(sys.argv[2]), Path(sys.argv[3])
        run_pool([Path(p) for p in sys.argv[4:]], out, jobs)
    else:
        main()
