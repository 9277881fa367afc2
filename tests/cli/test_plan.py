"""`rtx-matrix plan` through the CLI on real generated models: exit codes and exact output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from matrix.cli import main
from tests import modelgen

MANIFEST = """\
version: 1
targets:
  turing-mix: [sm75, sm86]
models:
  - name: mlp
    onnx: mlp.onnx
    targets: [default, sm75, turing-mix]
  - name: head
    onnx: fp8.onnx
    targets: [default, sm86, current]
    weightless: [false, true]
exclude:
  - {model: head, target: current, weightless: true}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    modelgen.mlp_fp32(tmp_path / "mlp.onnx")
    modelgen.fp8_qdq_matmul(tmp_path / "fp8.onnx")
    (tmp_path / "rtx-matrix.yaml").write_text(MANIFEST)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_json_lists_every_cell_with_verdict_and_runs_on(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--json", "--skip-rejected"]) == 0
    out = capsys.readouterr().out
    cells = {c["id"]: c for c in json.loads(out)["cells"]}
    assert {k: v["verdict"] for k, v in cells.items()} == {
        "mlp@default": "build",
        "mlp@sm75": "rejected",
        "mlp@turing-mix": "rejected",
        "head@default": "build",
        "head@default+weightless": "needs-gpu",
        "head@sm86": "rejected",
        "head@sm86+weightless": "rejected",
        "head@current": "needs-gpu",
        "head@current+weightless": "excluded",
    }
    assert cells["head@default"]["runs_on"] == ["sm89", "sm120", "sm121", "newer"]
    assert cells["mlp@default"]["runs_on"] == ["sm80", "sm86", "sm89", "sm120", "sm121", "newer"]
    assert {r["rule"] for r in cells["mlp@sm75"]["reasons"]} == {"turing-fp32-gemm"}
    assert json.loads(out)["summary"] == {
        "build": 2,
        "needs-gpu": 2,
        "rejected": 4,
        "excluded": 1,
        "rejected_by_rule": {"dtype-needs-cc": 2, "turing-fp32-gemm": 2},
    }
    assert set(cells["mlp@default"]) == {
        "id",
        "model",
        "target",
        "targets",
        "weightless",
        "verdict",
        "needs_gpu",
        "reasons",
        "runs_on",
    }


def test_rejections_exit_1_with_one_line_each(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert err[0].startswith("error: mlp@sm75: [turing-fp32-gemm] ")
    assert err[1].startswith("error: mlp@turing-mix: [turing-fp32-gemm] ")
    assert err[2] == (
        "error: head@sm86: [dtype-needs-cc] the model uses FP8, which needs CC 8.9 or newer; "
        "sm86 cannot run it"
    )
    assert err[3] == (
        "error: head@sm86+weightless: [dtype-needs-cc] the model uses FP8, which needs CC 8.9 "
        "or newer; sm86 cannot run it"
    )


def test_skip_rejected_turns_rejections_into_warnings(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--skip-rejected"]) == 0
    captured = capsys.readouterr()
    assert all(line.startswith("warning: ") for line in captured.err.splitlines())
    assert len(captured.err.splitlines()) == 4
    table = captured.out.splitlines()
    assert table[0].split() == ["cell", "verdict", "runs", "on", "why"]
    # Rejected cells counted by rule: why nothing builds shows at a glance.
    assert table[-1] == (
        "2 build, 2 needs-gpu, 4 rejected (2 dtype-needs-cc, 2 turing-fp32-gemm), 1 excluded"
    )
    row = next(line for line in table if line.startswith("mlp@turing-mix"))
    assert "rejected" in row and "sm75 sm86" in row


def test_markdown_grid_shows_rejections_by_rule_and_folds_the_reasons(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--format", "markdown"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 4  # the same error lines as the table
    lines = captured.out.splitlines()
    assert lines[2] == "| model | default | sm75 | turing-mix | sm86 | current |"
    assert lines[4] == (
        "| mlp | ✅ build · sm80 sm86 sm89 sm120 sm121 newer | ❌ rejected: `turing-fp32-gemm` "
        "| ❌ rejected: `turing-fp32-gemm` |  |  |"
    )
    assert lines[5].endswith(
        "| ❌ rejected: `dtype-needs-cc`<br>❌ weightless rejected: `dtype-needs-cc` "
        "| 🟡 needs-gpu · current<br>➖ weightless excluded |"
    )
    assert "<details><summary>4 rejected cells</summary>" in lines
    assert (
        "- `head@sm86` `dtype-needs-cc`: the model uses FP8, which needs CC 8.9 or newer; "
        "sm86 cannot run it"
    ) in lines
    assert "<details><summary>1 warning</summary>" in lines


def test_json_flag_is_format_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--skip-rejected", "--json"]) == 0
    flag = capsys.readouterr().out
    assert main(["plan", "--skip-rejected", "--format", "json"]) == 0
    assert capsys.readouterr().out == flag
    with pytest.raises(SystemExit) as exited:
        main(["plan", "--format", "yaml"])
    assert exited.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_clean_plan_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modelgen.matmul_fp16(tmp_path / "m.onnx")
    (tmp_path / "rtx-matrix.yaml").write_text(
        "version: 1\nmodels:\n  - name: m\n    onnx: m.onnx\n    targets: [sm75, default]\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 0


def test_bad_manifest_exits_2_and_names_file_line_and_path(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "bad.yaml").write_text(
        "version: 1\nmodels:\n  - name: m\n    onnx: missing.onnx\n    targets: [sm90]\n"
    )
    assert main(["plan", "bad.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: bad.yaml:5:15: $.models[0].targets[0]: ")
    assert "sm90" in err[0] and "not a TensorRT-RTX target" in err[0]


def test_missing_manifest_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2


def test_github_matrix_one_job_per_shard_covering_every_buildable_cell(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--skip-rejected", "--github-matrix", "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1  # `echo "matrix=$(...)" >> $GITHUB_OUTPUT` needs one line
    include = json.loads(out)["include"]
    assert [(e["pool"], e["shard"]) for e in include] == [
        ("cpu", "1/2"),
        ("cpu", "2/2"),
        ("gpu", "1/1"),
    ]
    assert sum(e["cells"] for e in include if e["pool"] == "cpu") == 2
    assert sum(e["cells"] for e in include if e["pool"] == "gpu") == 2
    assert len({e["name"] for e in include}) == 3


def test_github_matrix_refuses_zero_shards(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--skip-rejected", "--github-matrix", "--shards", "0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --shards must be at least 1 and --gpu-shards at least 0"
    )


def test_cells_may_follow_options(project: Path) -> None:
    from matrix.cli import make_parser, parse

    args = parse(make_parser(), ["build", "m.yaml", "-j2", "mlp@*", "-k", "head"])
    assert (args.manifest, args.cells, args.jobs, args.keep_going) == (
        "m.yaml",
        ["mlp@*", "head"],
        2,
        True,
    )
    with pytest.raises(SystemExit):
        parse(make_parser(), ["plan", "m.yaml", "extra"])


def test_a_model_the_parser_refuses_is_rejected_everywhere_without_importing_the_library(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    modelgen.single_op(tmp_path / "pool.onnx", op="MaxPool")
    modelgen.matmul_fp16(tmp_path / "ok.onnx")
    (tmp_path / "rtx-matrix.yaml").write_text(
        "version: 1\nmodels:\n"
        "  - {name: pool, onnx: pool.onnx, targets: [default, sm75, sm120]}\n"
        "  - {name: ok, onnx: ok.onnx, targets: [default]}\n"
    )
    # The parser runs in children; the plan's own process never imports the library.
    code = (
        "import sys; from matrix.cli import main; code = main(['plan', sys.argv[1]]); "
        "assert 'tensorrt_rtx' not in sys.modules, 'imported'; sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "rtx-matrix.yaml")],
        capture_output=True,
        text=True,
        env={**os.environ, "RTX_MATRIX_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 1, done.stderr
    message = (
        "[parser-unsupported] the TensorRT-RTX ONNX parser cannot import node 'y' (MaxPool): "
        "This version of TensorRT does not support dilations other than 1."
    )
    assert done.stderr.splitlines() == [
        f"error: pool@{t}: {message}" for t in ("default", "sm75", "sm120")
    ]
    assert done.stdout.splitlines()[-1] == "1 build, 3 rejected (3 parser-unsupported)"
