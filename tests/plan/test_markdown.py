"""`plan --format markdown` on the demo manifest: the exact grid a pull request shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.cli import main

ROOT = Path(__file__).resolve().parents[2]

DEMO_GRID = """\
### rtx-matrix plan: `manifests/demo/rtx-matrix.yaml` (TensorRT-RTX 1.7)

| model | default | rtx40 | sm75 | ampere-plus | current |
| --- | --- | --- | --- | --- | --- |
| classifier | ✅ build · sm80 sm86 sm89 sm120 sm121 newer<br>🟡 weightless needs-gpu · sm80 sm86 sm89 sm120 sm121 newer | ✅ build · sm89<br>🟡 weightless needs-gpu · sm89 | ✅ build · sm75<br>➖ weightless excluded |  |  |
| detector | ✅ build · sm80 sm86 sm89 sm120 sm121 newer |  | ✅ build · sm75 | ✅ build · sm80 sm86 sm89 sm120 |  |
| ranker | ✅ build · sm80 sm86 sm89 sm120 sm121 newer |  |  | ✅ build · sm80 sm86 sm89 sm120 |  |
| fp8-head | ✅ build · sm89 sm120 sm121 newer | ✅ build · sm89 |  |  | 🟡 needs-gpu · current |

✅ build · 🟡 needs-gpu (built only where a TensorRT-RTX GPU is) · ❌ rejected (rule) · ➖ excluded · ⚠️ warning. After `·`: the GPUs the engine runs on (`newer`: GPUs newer than the rules table).

**10 build, 3 needs-gpu, 1 excluded**
"""  # noqa: E501


def test_demo_grid_is_exactly_this(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path))
    assert main(["plan", "--format", "markdown", "manifests/demo/rtx-matrix.yaml"]) == 0
    assert capsys.readouterr().out == DEMO_GRID
