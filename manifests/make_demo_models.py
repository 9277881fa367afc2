"""Regenerate the demo's small ONNX models (committed, so the demo needs no generation step).

    python manifests/make_demo_models.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import modelgen  # noqa: E402

MODELS = {
    "classifier.onnx": modelgen.matmul_fp16,
    "detector.onnx": modelgen.conv_fp32,
    "ranker.onnx": modelgen.dynamic_batch_mlp,
    "fp8-head.onnx": modelgen.fp8_qdq_matmul,
}


def main() -> int:
    folder = Path(__file__).resolve().parent / "demo" / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in MODELS.items():
        make(folder / name)
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
