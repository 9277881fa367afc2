"""One cell of a big model: `rtx-matrix build` against a bare script that writes the engine
(issue 14). Targets: at most 1.1 times the bare script's wall time; a peak no higher.

The model is generated with `--size` bytes of fp16 weights in external data (default 2 GiB;
`--size 256MiB` for a quick run) and built for the library default. Each round runs both,
alternating which goes first, and reports, best and median:

- wall time and CPU time (user + system) of each process tree;
- peak memory: of the largest process (the kernel's high-water mark, exact) and of the whole
  tree (the sum of its processes' resident memory, sampled every 50 ms);
- what a tool that hashes and fsyncs after a plain write pays: sha256 of the engine (read
  back from the page cache) and fsync of the bare script's freshly written engine.

rtx-matrix's facts cache is warmed first (`plan`), so no run hashes the model. It builds
with `--force -j1`; its lock's `build_seconds` and `peak_rss_bytes` are shown too.

    python bench/bench_large.py [--size 2GiB] [--repeat 3] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE = """
import sys, tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(sys.argv[1])
blob = builder.build_serialized_network(network, builder.create_builder_config())
with open(sys.argv[2], "wb") as out:
    out.write(blob)
"""
"""The bare library: parse, build, write; no hash, no fsync, no lock."""

MiB = 1 << 20
GiB = 1 << 30
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Run:
    wall: float
    cpu: float
    largest: int
    """Bytes: the largest process's peak (ru_maxrss of the tree, from wait4)."""
    tree: int
    """Bytes: the highest sampled sum of the tree's resident memory (at least `largest`)."""


@dataclass
class Series:
    runs: list[Run] = field(default_factory=list)

    def best(self, key: Callable[[Run], float]) -> float:
        return min(key(run) for run in self.runs)

    def median(self, key: Callable[[Run], float]) -> float:
        return statistics.median(key(run) for run in self.runs)


class TreeSampler(threading.Thread):
    """The peak of the summed resident memory of `pid` and its descendants."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, sum(_rss(pid) for pid in _tree(self.pid)))
            self.done.wait(self.interval)


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return pids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def measured(command: list[str], env: dict[str, str]) -> Run:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    sampler = TreeSampler(process.pid)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed with exit code {process.returncode}")
    # wait4's usage covers the child and the descendants it waited for: the whole tree.
    largest = usage.ru_maxrss * 1024
    # Sampling may miss a short peak: the tree holds at least its largest process's.
    return Run(wall, usage.ru_utime + usage.ru_stime, largest, max(sampler.peak, largest))


def hash_seconds(engine: Path) -> float:
    buffer = bytearray(16 * MiB)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    started = time.perf_counter()
    with engine.open("rb", buffering=0) as source:
        while read := source.readinto(buffer):
            digest.update(view[:read])
    return time.perf_counter() - started


def fsync_seconds(engine: Path) -> float:
    started = time.perf_counter()
    for path, flags in ((engine, os.O_RDONLY), (engine.parent, os.O_RDONLY)):
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def size_arg(text: str) -> int:
    from matrix.manifest.loader import parse_size

    size = parse_size(text)
    if size is None or size < MiB:
        raise argparse.ArgumentTypeError(f"not a size of at least 1 MiB: {text!r}")
    return size


def make_project(folder: Path, size: int) -> tuple[Path, Path]:
    from tests import modelgen

    model = modelgen.external_data_model(folder / "big.onnx", size=size)
    manifest = folder / "rtx-matrix.yaml"
    manifest.write_text("version: 1\nmodels:\n  - name: big\n    onnx: big.onnx\n"
                        "    targets: [default]\n")
    return manifest, model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=2 * GiB,
                        help="bytes of weights: 2GiB (default), 256MiB, ...")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER",
                        help="build in FOLDER and keep it (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return run(folder, args.size, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, size: int, repeat: int) -> int:
    print(f"model: {size / GiB:.2f} GiB of fp16 weights in external data; {os.cpu_count()} "
          f"cores, load {os.getloadavg()[0]:.1f} at the start")
    manifest, model = make_project(folder, size)
    env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(folder / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cli = [sys.executable, "-m", "matrix"]
    warm = measured([*cli, "plan", str(manifest)], env)
    print(f"cold plan (hashes the model, fills the facts cache): {warm.wall:.1f} s, "
          f"{warm.largest / MiB:.0f} MiB")
    ours_command = [*cli, "build", "--force", "-q", "-j1", str(manifest)]
    bare_engine = folder / "bare.engine"
    bare_command = [sys.executable, "-c", BARE, str(model), str(bare_engine)]
    ours, bare = Series(), Series()
    hashes, fsyncs, inside, recorded = [], [], [], []
    for round_number in range(repeat):
        order = [("bare", bare), ("ours", ours)]
        for name, series in order if round_number % 2 == 0 else order[::-1]:
            if name == "bare":
                series.runs.append(measured(bare_command, env))
                fsyncs.append(fsync_seconds(bare_engine))
                hashes.append(hash_seconds(bare_engine))
                if round_number < repeat - 1:  # the last one is written again below
                    bare_engine.unlink()
            else:
                series.runs.append(measured(ours_command, env))
                entry = json.loads(manifest.with_suffix(".lock").read_text())["engines"]
                inside.append(entry["big@default"]["build_seconds"])
                recorded.append(entry["big@default"]["peak_rss_bytes"] or 0)
        print(f"  round {round_number + 1}: rtx-matrix {ours.runs[-1].wall:.2f} s, "
              f"bare {bare.runs[-1].wall:.2f} s", flush=True)
    report(ours, bare)
    print(f"  inside rtx-matrix's worker (lock build_seconds): best {min(inside):.2f} s, "
          f"median {statistics.median(inside):.2f} s; peak_rss_bytes recorded: "
          f"{statistics.median(recorded) / MiB:.0f} MiB")
    print(f"  after a plain write: sha256 of the engine best {min(hashes):.2f} s, median "
          f"{statistics.median(hashes):.2f} s; fsync best {min(fsyncs):.2f} s, median "
          f"{statistics.median(fsyncs):.2f} s")
    engine = bare_engine.read_bytes()
    bare_engine.unlink()
    write_costs(engine, folder, max(repeat, 5))
    del engine
    print(f"  memory factor: the largest process peaks at "
          f"{bare.median(lambda r: r.largest) / size:.2f}x the weights (bare), "
          f"{ours.median(lambda r: r.largest) / size:.2f}x (rtx-matrix's worker)")
    print(f"load {os.getloadavg()[0]:.1f} at the end (other work on this machine skews wall "
          "times; CPU times much less)")
    ratio = ours.best(lambda r: r.wall) / bare.best(lambda r: r.wall)
    peak_ok = ours.best(lambda r: r.largest) <= bare.best(lambda r: r.largest) * 1.01
    return 0 if ratio <= 1.1 and peak_ok else 1


def write_costs(engine: bytes, folder: Path, repeat: int) -> None:
    """The engine written three ways, then fsynced, alternating: plainly; hashed in 1 MiB
    slices by the writing thread (rtx-matrix before issue 14); as rtx-matrix writes it now."""
    from matrix.build.builder import _write_hashed  # the worker's own writer

    view = memoryview(engine)

    def plain(fd: int) -> None:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])

    def sliced(fd: int) -> None:
        digest = hashlib.sha256()
        for start in range(0, len(view), MiB):
            piece = view[start:start + MiB]
            digest.update(piece)
            while piece:
                piece = piece[os.write(fd, piece):]

    def current(fd: int) -> None:
        _write_hashed(fd, view, lambda done: None)

    ways = {"plain write": plain, "hash in 1 MiB slices": sliced, "rtx-matrix": current}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ways}
    target = folder / "written.engine"
    for _ in range(repeat):
        for name, write in ways.items():
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                started = time.perf_counter()
                write(fd)
                written = time.perf_counter()
                os.fsync(fd)
                synced = time.perf_counter()
            finally:
                os.close(fd)
            target.unlink()
            times[name][0].append(written - started)
            times[name][1].append(synced - written)
    print(f"  writing the {len(view) / GiB:.2f} GiB engine in this process, then fsync "
          f"(best / median of {repeat}):")
    for name, (writes, syncs) in times.items():
        print(f"    {name:22} write {min(writes):6.2f} / {statistics.median(writes):6.2f} s"
              f"   fsync {min(syncs):6.2f} / {statistics.median(syncs):6.2f} s   total median "
              f"{statistics.median(w + f for w, f in zip(writes, syncs, strict=True)):6.2f} s")


def report(ours: Series, bare: Series) -> None:
    rows: list[tuple[str, Callable[[Run], float], Callable[[float], str]]] = [
        ("wall", lambda r: r.wall, lambda v: f"{v:.2f} s"),
        ("CPU (user+sys)", lambda r: r.cpu, lambda v: f"{v:.2f} s"),
        ("peak, largest process", lambda r: r.largest, lambda v: f"{v / MiB:.0f} MiB"),
        ("peak, process tree", lambda r: r.tree, lambda v: f"{v / MiB:.0f} MiB"),
    ]
    print(f"{'':24}{'rtx-matrix best / median':>28}{'bare best / median':>26}"
          f"{'ratio best / median':>22}")
    for name, key, text in rows:
        ratio_best = ours.best(key) / bare.best(key)
        ratio_median = ours.median(key) / bare.median(key)
        print(f"{name:24}{text(ours.best(key)) + ' / ' + text(ours.median(key)):>28}"
              f"{text(bare.best(key)) + ' / ' + text(bare.median(key)):>26}"
              f"{f'{ratio_best:.3f} / {ratio_median:.3f}':>22}")


if __name__ == "__main__":
    sys.exit(main())
