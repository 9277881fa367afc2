"""`rtx-matrix status`: stale cells with their reasons, as text and JSON, and `--check`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from matrix.cli import main
from tests import modelgen
from tests.cli.test_build import Project
from tests.cli.test_build import project as project  # the fixture

pytestmark = pytest.mark.slow


def test_status_before_and_after_a_build(project: Project, capsys: Any) -> None:
    manifest = str(project.manifest)
    assert main(["status", manifest, "--check"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "a@sm86: new cell",
        "a@sm89: new cell",
        "b@sm86: new cell",
        "0 of 3 cells up to date, 3 stale",
    ]
    assert captured.err == "error: 3 cells out of date\n"
    assert project.build() == 0
    capsys.readouterr()
    assert main(["status", manifest, "--check"]) == 0
    assert capsys.readouterr().out == "3 of 3 cells up to date, 0 stale\n"


def test_status_json_names_every_reason(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    modelgen.conv_fp32(project.root / "models" / "b.onnx", seed=9)
    project.engine("a@sm89").unlink()
    capsys.readouterr()
    assert main(["status", str(project.manifest), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    reasons = {cell["id"]: cell["reasons"] for cell in data["cells"]}
    assert reasons == {"a@sm86": [], "a@sm89": ["engine missing"], "b@sm86": ["model changed"]}
    assert data["tensorrt_rtx"] == "1.7.1.116"
    assert data["removed"] == []


def test_gpu_cells_are_marked_not_buildable_here(project: Project, capsys: Any) -> None:
    gpu = "  - name: g\n    onnx: models/a.onnx\n    targets: [current]\n"
    project.write("a", "g", extra={"g": gpu})
    assert main(["status", str(project.manifest)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("g@current"))
    assert line.startswith("g@current: new cell [not buildable here, needs a GPU: ")
