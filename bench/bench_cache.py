"""The shared engine cache on real models: a fresh clone with a warm cache against building.

Real models: the demo's four, and PP-OCRv4's detector and recognizer and the PP-OCR v2
direction classifier from the PyPI package `rapidocr-onnxruntime` (downloaded into the
bench folder at the first run, never committed). A project of them is built once with a
folder cache (`--s3` also puts one on a local S3 server, moto's), then, side by side in
one run, each repeated and reported as best and median:

- **cold**: a fresh clone (manifest, models, committed lock; no engines) built with
  `--no-cache`; **warm**: the same clone built with the cache. Target: warm at least 20x
  faster than cold.
- **hit path**: the cache's part of that warm run, in-process (look up every cell, download,
  check size and header, rename into place, lock and stamps), against copying the same
  engine files with `shutil.copyfile`. Target: at most 1.5x the copy. An engine file this
  user has hashed before is not hashed again while its stat holds
  (`matrix.engine_cache.verified`); "the first by this user" is the same fetch with those
  marks removed, every engine hashed.
  Also shown: the same copy with each file fsynced (what fetching would cost if fetched
  engines were fsynced as built ones are; they are not: `matrix.engine_cache.transfer`),
  and hashing the same bytes alone: no check can go below that. With `--s3`, the same
  against s3fs downloading the same objects (`get`, its own concurrency), each side with a
  client of its own made in the timed part.
- **no-op**: `rtx-matrix build` with everything up to date, with the cache set and with
  `--no-cache`. Target: the same time, fsspec never imported, the cache folder untouched.

    python bench/bench_cache.py                 # folder cache
    python bench/bench_cache.py --s3            # also a local S3 server
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
OCR_PACKAGE = "rapidocr-onnxruntime"
OCR_MODELS = {
    "ocr-det": ("ch_PP-OCRv4_det_infer.onnx",
                "x: {min: [1, 3, 32, 32], opt: [1, 3, 640, 640], max: [1, 3, 1280, 1280]}"),
    "ocr-rec": ("ch_PP-OCRv4_rec_infer.onnx",
                "x: {min: [1, 3, 48, 32], opt: [1, 3, 48, 320], max: [8, 3, 48, 2048]}"),
    "ocr-cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "x: {min: [1, 3, 48, 192], opt: [6, 3, 48, 192], max: [32, 3, 48, 192]}"),
}
OCR_TARGETS = "[default, sm86, sm89]"


def rtx_matrix(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "matrix", *args], capture_output=True,
                            text=True, check=False, env=env or ENV)
    if result.returncode != 0:
        raise SystemExit(f"rtx-matrix {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def ocr_models(folder: Path) -> Path:
    """The three PP-OCR models of the PyPI package, unpacked into `folder`."""
    wanted = [name for name, _ in OCR_MODELS.values()]
    if all((folder / name).exists() for name in wanted):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        download, OCR_PACKAGE], check=True)
        wheel = next(Path(download).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if Path(member).name in wanted:
                    (folder / Path(member).name).write_bytes(archive.read(member))
    _distinct_dim_names(folder / OCR_MODELS["ocr-cls"][0])
    return folder


def _distinct_dim_names(path: Path) -> None:
    """The classifier as shipped names both its height and width `?`, which TensorRT takes
    for one dimension (so no 48x192 profile fits): give each dynamic dim its own name."""
    import onnx

    model = onnx.load(str(path))
    for number, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if not dim.dim_value:
            dim.dim_param = f"d{number}"
    onnx.save(model, str(path))


def make_project(folder: Path, cache: str) -> Path:
    """The demo's models and manifest, plus the OCR models, with `cache: {url}`."""
    demo = ROOT / "manifests" / "demo"
    shutil.copytree(demo / "models", folder / "models", dirs_exist_ok=True)
    models = ocr_models(folder.parent / "ocr-models")
    lines = [line for line in (demo / "rtx-matrix.yaml").read_text().splitlines()
             if not line.startswith("#")]
    text = "\n".join(lines).replace("exclude:", _ocr_entries(models, folder) + "exclude:")
    manifest = folder / "rtx-matrix.yaml"
    manifest.write_text(f"cache: {{url: '{cache}'}}\n{text}\n")
    return manifest


def _ocr_entries(models: Path, folder: Path) -> str:
    entries = []
    for name, (file, profile) in OCR_MODELS.items():
        shutil.copy2(models / file, folder / "models" / file)
        entries.append(f"  - name: {name}\n    onnx: models/{file}\n"
                       f"    targets: {OCR_TARGETS}\n    profiles:\n      - {profile}\n")
    return "".join(entries) + "\n"


_CLONES = itertools.count()


def fresh_clone(origin: Path, into: Path) -> Path:
    """A clone as CI makes one: a folder never seen before (`into` with a new number), so
    no cache keyed by path can serve it. The previous clone is removed only after the new
    one is made, so no file can get a removed file's inode and pass for it."""
    folder = into.with_name(f"{into.name}-{next(_CLONES)}")
    folder.mkdir(parents=True)
    for name in ("rtx-matrix.yaml", "rtx-matrix.lock"):
        shutil.copy2(origin / name, folder / name)
    shutil.copytree(origin / "models", folder / "models")
    for old in into.parent.glob(f"{into.name}-*"):
        if old != folder:
            shutil.rmtree(old)
    return folder / "rtx-matrix.yaml"


def timed(*args: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one `rtx-matrix` process."""
    started = time.perf_counter()
    rtx_matrix(*args, env=env)
    return time.perf_counter() - started


def summary(name: str, times: list[float]) -> str:
    return f"{name}: best {min(times):.3f} s, median {statistics.median(times):.3f} s " \
           f"({len(times)} runs)"


def cache_snapshot(cache: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


# --- the hit path, in-process --------------------------------------------------------------


def hit_path(manifest: Path, url: str | None = None) -> float:
    """`cache pull` minus the survey (planning is not the cache's): every engine fetched
    (from `url`, else the manifest's cache)."""
    from matrix.build.run import BuildSettings, build
    from matrix.lockfile.survey import survey
    from matrix.manifest.types import CacheSpec

    state = survey(manifest)
    spec = CacheSpec(url, push=False) if url else state.plan.manifest.cache
    assert isinstance(spec, CacheSpec)
    settings = BuildSettings(cache=spec, fetch_only=True, quiet=True)
    started = time.perf_counter()
    outcomes = build(state, settings)
    elapsed = time.perf_counter() - started
    assert all(o.status.value in ("from cache", "up to date", "skipped") for o in outcomes), \
        outcomes
    return elapsed


def copy_path(manifest: Path, cache: Path, into: Path, durable: bool = False) -> float:
    """Copying the same engine files from the same cache folder (`durable`: each fsynced)."""
    from matrix.lockfile.io import read_lock

    lock = read_lock(manifest.with_suffix(".lock"))
    assert lock is not None
    pairs = [(cache / "v1" / "engines" / f"{e.sha256}.engine", into / e.path)
             for e in lock.engines.values()]
    for _, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for source, target in pairs:
        shutil.copyfile(source, target)
        if durable:
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return time.perf_counter() - started


def hash_only(cache: Path) -> float:
    """sha256 of every cached engine, already read into memory: the floor of any check."""
    import hashlib

    blobs = [p.read_bytes() for p in (cache / "v1" / "engines").glob("*.engine")]
    started = time.perf_counter()
    for blob in blobs:
        hashlib.sha256(blob).digest()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rtx-matrix-bench-cache"))
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=9, help="runs of the quick measurements")
    parser.add_argument("--s3", action="store_true", help="also a cache on a local S3 server")
    args = parser.parse_args()
    base: Path = args.dir
    if base.exists():
        for child in base.iterdir():
            if child.name != "ocr-models":
                shutil.rmtree(child)
    cache = base / "cache"
    origin = base / "origin"
    origin.mkdir(parents=True)
    ENV["RTX_MATRIX_CACHE_DIR"] = str(base / "facts")
    os.environ["RTX_MATRIX_CACHE_DIR"] = ENV["RTX_MATRIX_CACHE_DIR"]
    manifest = make_project(origin, str(cache))
    print(f"building {manifest} once and pushing to {cache} ...", flush=True)
    first = rtx_matrix("build", str(manifest), "-j2")
    print(first.stdout.strip().splitlines()[-1])
    files = list((cache / "v1" / "engines").glob("*.engine"))
    total = sum(p.stat().st_size for p in files)
    print(f"cache: {len(files)} engines, {total / 1e6:.1f} MB")

    clone = base / "clone"
    cold, warm = [], []
    for run in range(max(args.cold_runs, args.runs)):
        if run < args.cold_runs:
            cloned = fresh_clone(origin, clone)
            cold.append(timed("build", str(cloned), "-j2", "--no-cache"))
        cloned = fresh_clone(origin, clone)
        warm.append(timed("build", str(cloned), "-j2"))
        out = rtx_matrix("build", str(cloned)).stdout
        assert "up to date" in out and "from cache" not in out, out
    print(summary("cold clone, built (--no-cache)", cold))
    print(summary("fresh clone, warm cache       ", warm))
    ratio = min(cold) / min(warm)
    median = statistics.median(cold) / statistics.median(warm)
    print(f"  => warm cache {ratio:.1f}x faster (median {median:.1f}x); "
          f"target >= 20x: {'ok' if ratio >= 20 else 'MISSED'}")

    firsts, hits, copies, durable, hashing = [], [], [], [], []
    for _ in range(args.runs):
        shutil.rmtree(base / "facts" / "verified", ignore_errors=True)
        firsts.append(hit_path(fresh_clone(origin, clone)))
        cloned = fresh_clone(origin, clone)
        hits.append(hit_path(cloned))
        for durably, times in ((False, copies), (True, durable)):
            shutil.rmtree(base / "copy", ignore_errors=True)
            times.append(copy_path(cloned, cache, base / "copy", durably))
        hashing.append(hash_only(cache))
    print(summary("hit path (fetch, check, place)", hits))
    print(summary("  the first by this user      ", firsts))
    print(summary("copying the same files        ", copies))
    print(summary("  the same copy, fsynced      ", durable))
    print(summary("  sha256 of the same bytes    ", hashing))
    hit_ratio = min(hits) / min(copies)
    print(f"  => hit path {hit_ratio:.2f}x the copy (median "
          f"{statistics.median(hits) / statistics.median(copies):.2f}x), "
          f"{min(hits) / min(durable):.2f}x the fsynced copy; target <= 1.5x: "
          f"{'ok' if hit_ratio <= 1.5 else 'MISSED'}")
    print(f"  => the first by this user, every engine hashed: "
          f"{min(firsts) / min(copies):.2f}x the copy (median "
          f"{statistics.median(firsts) / statistics.median(copies):.2f}x; hashing alone: "
          f"{min(hashing) / min(copies):.2f}x)")

    with_cache, without = [], []
    before = cache_snapshot(cache)
    for _ in range(args.runs):
        with_cache.append(timed("build", str(cloned)))
        without.append(timed("build", str(cloned), "--no-cache"))
    importtime = subprocess.run([sys.executable, "-X", "importtime", "-m", "matrix", "build",
                                 str(cloned)], capture_output=True, text=True, env=ENV)
    imported = {line.split("|")[-1].strip() for line in importtime.stderr.splitlines()}
    print(summary("no-op, cache set              ", with_cache))
    print(summary("no-op, --no-cache             ", without))
    untouched = cache_snapshot(cache) == before
    print(f"  => {min(with_cache) / min(without):.2f}x; fsspec imported: "
          f"{'fsspec' in imported}; cache untouched: {untouched}")
    if args.s3:
        s3_bench(origin, clone, base, args.runs)


def s3_bench(origin: Path, clone: Path, base: Path, runs: int) -> None:
    """The warm clone again, with the cache on moto's S3 server on localhost."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**ENV, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(env)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("bench")
        url = "s3://bench/engines"
        rtx_matrix("cache", "push", str(origin / "rtx-matrix.yaml"), "--cache", url, env=env)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        objects = fs.find("bench/engines/v1/engines")
        warm, hits, gets = [], [], []
        for _ in range(runs):
            cloned = fresh_clone(origin, clone)
            warm.append(timed("build", str(cloned), "-j2", "--cache", url, env=env))
            cloned = fresh_clone(origin, clone)
            hits.append(hit_path(cloned, url))
            into = base / "s3-copy"
            shutil.rmtree(into, ignore_errors=True)
            into.mkdir()
            started = time.perf_counter()  # a new client each time, as the hit path's
            s3fs.S3FileSystem(skip_instance_cache=True).get(
                objects, [str(into / Path(o).name) for o in objects])
            gets.append(time.perf_counter() - started)
        print(summary("fresh clone, warm S3 cache    ", warm))
        print(summary("hit path, S3                  ", hits))
        print(summary("s3fs get of the same objects  ", gets))
        print(f"  => hit path {min(hits) / min(gets):.2f}x the download (median "
              f"{statistics.median(hits) / statistics.median(gets):.2f}x); target <= 1.5x: "
              f"{'ok' if min(hits) / min(gets) <= 1.5 else 'MISSED'}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        del base


if __name__ == "__main__":
    main()
