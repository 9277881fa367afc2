from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from matrix.cli import main
from matrix.errors import InputError
from matrix.facts.cache import FactsCache
from matrix.facts.collect import gather_facts
from matrix.facts.types import ModelFacts
from matrix.manifest.loader import load_manifest
from tests import modelgen


class CountingCache(FactsCache):
    """The real cache, counting the models asked for."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.asked: list[Path] = []

    def get(self, path: Path) -> ModelFacts:
        self.asked.append(path)
        return super().get(path)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    modelgen.dynamic_batch_mlp(tmp_path / "models" / "a.onnx")
    modelgen.conv_fp32(tmp_path / "models" / "b.onnx")
    (tmp_path / "models" / "bad.onnx").write_text("hello: 1\n")
    return tmp_path


def _manifest(project: Path, body: str) -> Path:
    path = project / "m.yaml"
    path.write_text("version: 1\nmodels:\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return path


def _problems(manifest: Path, cache_dir: Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        gather_facts(load_manifest(manifest), FactsCache(cache_dir))
    return [str(p) for p in caught.value.problems]


def test_facts_by_model_name_and_each_file_inspected_once(project: Path) -> None:
    manifest = _manifest(
        project,
        """\
        - name: a
          onnx: models/a.onnx
          targets: [default]
        - name: a-again
          onnx: models/a.onnx
          targets: [sm86]
        - name: b
          onnx: models/b.onnx
          targets: [sm75]
        """,
    )
    cache = CountingCache(project / "cache")
    facts = gather_facts(load_manifest(manifest), cache)
    assert sorted(facts) == ["a", "a-again", "b"]
    assert facts["a"] is facts["a-again"]
    assert facts["b"].path == str(project / "models" / "b.onnx")
    assert [p.name for p in cache.asked] == ["a.onnx", "b.onnx"]
    # A dynamic input without a profile is the planner's rule, not bad input.
    assert facts["a"].dynamic_inputs


def test_every_problem_at_once_with_file_line_and_path(project: Path) -> None:
    manifest = _manifest(
        project,
        """\
        - name: a
          onnx: models/a.onnx
          targets: [default]
          profiles:
            - inptu: {min: [1, 16], opt: [4, 16], max: [8, 16]}
            - x: {min: [1, 16], opt: [4, 32], max: [8, 32]}
            - x: {min: [1, 16, 1], opt: [4, 16, 1], max: [8, 16, 1]}
        - name: b
          onnx: models/b.onnx
          targets: [default]
        - name: c
          onnx: models/bad.onnx
          targets: [default]
        - name: d
          onnx: models/none.onnx
          targets: [default]
        - name: e
          onnx: models
          targets: [default]
        """,
    )
    assert _problems(manifest, project / "cache") == [
        "m.yaml:7:9: $.models[0].profiles[0].inptu: the model has no input 'inptu'"
        " (its inputs: 'x')",
        "m.yaml:8:36: $.models[0].profiles[1].x.opt[1]: input 'x' [batch, 16] has dim 1"
        " fixed at 16, but opt gives 32",
        "m.yaml:8:50: $.models[0].profiles[1].x.max[1]: input 'x' [batch, 16] has dim 1"
        " fixed at 16, but max gives 32",
        "m.yaml:9:9: $.models[0].profiles[2].x: input 'x' [batch, 16] has rank 2,"
        " but the profile gives it 3 dims",
        "m.yaml:14:5: $.models[2].onnx: models/bad.onnx: not a valid ONNX model"
        " (truncated, corrupt, or not ONNX at all)",
        "m.yaml:17:5: $.models[3].onnx: models/none.onnx: no such file",
        "m.yaml:20:5: $.models[4].onnx: models: is a directory, not an ONNX file",
    ]


def test_shape_input_values_must_fit_the_input(project: Path) -> None:
    modelgen.shape_input_model(project / "models" / "s.onnx")
    manifest = _manifest(
        project,
        """\
        - name: s
          onnx: models/s.onnx
          targets: [default]
          profiles:
            - s: {values: {min: [1, 1, 1], opt: [2, 6, 1], max: [12, 12, 1]}}
            - x: {values: {min: [1], opt: [1], max: [1]}}
              s: {values: {min: [1, 1], opt: [2, 6], max: [12, 12]}}
        """,
    )
    assert _problems(manifest, project / "cache") == [
        "m.yaml:7:13: $.models[0].profiles[0].s.values: input 's' [2] holds 2 values,"
        " but the profile gives 3",
        "m.yaml:8:13: $.models[0].profiles[1].x.values: input 'x' is fp32: only an INT32 or"
        " INT64 input holds a shape, so only those take values",
    ]


def test_misspelt_input_gets_a_suggestion(project: Path) -> None:
    manifest = _manifest(
        project,
        """\
        - name: a
          onnx: models/a.onnx
          targets: [default]
          profiles:
            - X: {min: [1, 16], opt: [4, 16], max: [8, 16]}
        """,
    )
    assert _problems(manifest, project / "cache") == [
        "m.yaml:7:9: $.models[0].profiles[0].X: the model has no input 'X', did you mean 'x'?"
    ]


def test_missing_external_data_is_bad_input(project: Path) -> None:
    modelgen.external_data_model(project / "models" / "ext.onnx")
    (project / "models" / "ext.onnx.data").unlink()
    manifest = _manifest(
        project,
        """\
        - name: ext
          onnx: models/ext.onnx
          targets: [default]
        """,
    )
    assert _problems(manifest, project / "cache") == [
        "m.yaml:4:5: $.models[0].onnx: models/ext.onnx: external data file 'ext.onnx.data'"
        " of tensor 'w' is missing"
    ]


def test_plan_command_exits_2_with_one_line_per_problem(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(project / "cache"))
    manifest = _manifest(
        project,
        """\
        - name: c
          onnx: models/bad.onnx
          targets: [default]
        - name: d
          onnx: models/none.onnx
          targets: [default]
        """,
    )
    assert main(["plan", str(manifest)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "error: m.yaml:4:5: $.models[0].onnx: models/bad.onnx: not a valid ONNX model"
        " (truncated, corrupt, or not ONNX at all)",
        "error: m.yaml:7:5: $.models[1].onnx: models/none.onnx: no such file",
    ]


def test_parser_verdicts_are_asked_once_per_library_version(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matrix.facts.parser_check as parser_check

    modelgen.single_op(project / "models" / "q.onnx", op="QLinearMatMul")
    manifest = load_manifest(
        _manifest(
            project,
            """\
            - name: b
              onnx: models/b.onnx
              targets: [default]
            - name: q
              onnx: models/q.onnx
              targets: [default]
            """,
        )
    )
    asked: list[list[str]] = []
    real = parser_check.check_models

    def counting(paths: list[Path], version: str, jobs: int | None = None) -> object:
        asked.append(sorted(p.name for p in paths))
        return real(paths, version, jobs)

    monkeypatch.setattr(parser_check, "check_models", counting)
    facts = gather_facts(manifest, FactsCache(project / "cache"), tensorrt_rtx="1.7.1.116")
    q = facts["q"].parser
    assert q is not None and q.tensorrt_rtx == "1.7.1.116"
    assert [(e.node, e.op, e.message) for e in q.errors] == [
        ("y", "QLinearMatMul", "unsupported operator")
    ]
    assert facts["b"].parser is not None and facts["b"].parser.errors == ()
    again = gather_facts(manifest, FactsCache(project / "cache"), tensorrt_rtx="1.7.1.116")
    assert again == facts  # from the cache: no child asked
    gather_facts(manifest, FactsCache(project / "cache"), tensorrt_rtx="1.7.2.1")
    assert asked == [["b.onnx", "q.onnx"], ["b.onnx", "q.onnx"]]
