"""Peak memory of inspecting an ONNX model whose 1 GB of weights are external.

Target (issue 2): peak RSS <= 200 MB, i.e. bounded by the graph, not the weights.
The inspection runs in a fresh subprocess with a cold facts cache; its peak RSS comes from
`getrusage(RUSAGE_CHILDREN)`. A warm `FactsCache.get` is then timed in this process.

    python bench/bench_inspect_rss.py [--size-mb 1024]

Exit status 1 when the peak RSS is over the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matrix.facts.cache import FactsCache  # noqa: E402
from tests import modelgen  # noqa: E402

TARGET_MB = 200

CHILD = """
import sys, time
from pathlib import Path
from matrix.facts.cache import FactsCache
start = time.perf_counter()
facts = FactsCache(Path(sys.argv[2])).get(Path(sys.argv[1]))
print(f"{time.perf_counter() - start:.3f} {facts.size} {facts.digest}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rtx-matrix-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        model = modelgen.external_data_model(folder / "big.onnx", size=args.size_mb << 20)
        print(
            f"wrote {args.size_mb} MiB of external weights in {time.perf_counter() - start:.1f} s"
        )
        # Age the files so the cache entry is not "racily clean" (re-hashed until it ages).
        old = time.time_ns() - 10 * 10**9
        for file in (model, folder / "big.onnx.data"):
            os.utime(file, ns=(old, old))

        cache_dir = folder / "cache"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(model), str(cache_dir)],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        inspect_s, size, digest = out.stdout.split()
        print(f"cold inspect: {float(inspect_s):.2f} s inside a {wall:.2f} s subprocess")
        print(f"model size {int(size) / 2**20:.0f} MiB, digest {digest[:19]}...")
        print(f"peak RSS of the subprocess: {peak_mb:.0f} MB (target <= {TARGET_MB} MB)")

        cache = FactsCache(cache_dir)
        start = time.perf_counter()
        runs = 1000
        for _ in range(runs):
            facts = cache.get(model)
        warm = (time.perf_counter() - start) / runs
        assert facts.digest == digest
        print(f"warm FactsCache.get: {warm * 1e6:.0f} us")
    return 0 if peak_mb <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
