"""What the application side costs at start-up: importing `matrix.runtime`, `select`, and a
`prepare` that finds its refitted engine in the cache.

Measured side by side in one run, best of N and median:

- a fresh `python -c "import matrix.runtime"` against a bare `python -c "pass"`: the import
  cost an application pays (tensorrt_rtx, onnx, rich and yaml are not imported);
- `select` on a bundle of E engines (E/10 models of 10 engines each, in one family per 2
  models), in the process, with bundle.json read each time and parsed once;
- `prepare` on a cache hit, for a weightless engine of S MiB: reading bundle.json, selecting,
  and hashing the cached engine (which the application then reads again to deserialize),
  against reading the engine file alone.

    python bench/bench_runtime.py [--engines 1000] [--size-mib 256] [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
TARGETS = [(), ("sm75",), ("sm80",), ("sm86",), ("sm89",), ("sm120",), ("sm121",),
           ("sm80", "sm86"), ("sm86", "sm89"), ("sm89", "sm120")]


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def python(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, env=ENV,
                                  cwd=ROOT)


def big_bundle(folder: Path, engines: int) -> Path:
    from matrix.runtime.bundle import Bundle, BundleEngine, Family, bundle_to_json

    made = []
    models = max(1, engines // len(TARGETS))
    for m in range(models):
        for built_for in TARGETS:
            cell = f"m{m:04d}@{'+'.join(built_for) or 'default'}"
            runs_on = built_for or ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")
            made.append(BundleEngine(cell, f"m{m:04d}", f"f{m // 2:04d}", f"engines/{cell}.engine",
                                     "0" * 64, 1, "1.7.1.116", built_for, built_for, runs_on,
                                     False, ("fp16",)))
    families = tuple(Family(f"f{f:04d}", tuple(f"m{m:04d}" for m in (2 * f, 2 * f + 1)
                                               if m < models))
                     for f in range((models + 1) // 2))
    (folder / "bundle.json").write_text(bundle_to_json(Bundle(folder, "0.1.0", "1.7.1.116",
                                                              families, tuple(made))))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=1000)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    from matrix.gpu import Gpu
    from matrix.plan.capabilities import CC
    from matrix.runtime import prepare, read_bundle, select
    from tests.runtime.stand_in import StandInRefitter
    from tests.runtime.test_prepare import model_files, write_bundle

    bare = timed(python("pass"), args.runs)
    imported = timed(python("import matrix.runtime"), args.runs)
    print(f"python start-up:                best {bare[0] * 1e3:6.1f} ms, median "
          f"{bare[1] * 1e3:6.1f} ms")
    print(f"... + import matrix.runtime:    best {imported[0] * 1e3:6.1f} ms, median "
          f"{imported[1] * 1e3:6.1f} ms  (+{(imported[0] - bare[0]) * 1e3:.1f} ms)")

    with tempfile.TemporaryDirectory() as temp:
        folder = big_bundle(Path(temp), args.engines)
        parsed = read_bundle(folder)
        read_and_select = timed(lambda: select(folder, "8.6"), args.runs)
        select_only = timed(lambda: select(parsed, "8.6"), args.runs)
        print(f"select, {len(parsed.engines)} engines, reading bundle.json: best "
              f"{read_and_select[0] * 1e3:.1f} ms, median {read_and_select[1] * 1e3:.1f} ms")
        print(f"select, {len(parsed.engines)} engines, parsed bundle:       best "
              f"{select_only[0] * 1e3:.1f} ms, median {select_only[1] * 1e3:.1f} ms")

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        model = model_files(root / "src")
        payload = os.urandom(1 << 20) * args.size_mib
        bundle = write_bundle(root / "b", model, engine_bytes=payload)
        gpu = Gpu(0, "NVIDIA GeForce RTX 3090", CC(8, 6), 24 << 30, "GPU-x", "580")
        ready = prepare(bundle, gpu, root / "cache", refitter=StandInRefitter())
        engine = ready.path("ocr")
        hit = timed(lambda: prepare(bundle, gpu, root / "cache", refitter=StandInRefitter()),
                    args.runs)
        read = timed(engine.read_bytes, args.runs)
        print(f"prepare, cache hit, {args.size_mib} MiB engine: best {hit[0] * 1e3:.0f} ms, "
              f"median {hit[1] * 1e3:.0f} ms; reading the engine once: best "
              f"{read[0] * 1e3:.0f} ms, median {read[1] * 1e3:.0f} ms "
              f"(ratio {hit[0] / read[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
