"""The manifest loader: folders of good and bad manifests, then the finer points one by one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from matrix.cli import report_error
from matrix.errors import InputError
from matrix.manifest.loader import display_path, load_manifest, parse_size
from matrix.manifest.types import (
    BuilderOptions,
    Exclusion,
    InputShape,
    Manifest,
    Target,
    ValueRange,
)
from matrix.plan.capabilities import CC

HERE = Path(__file__).parent.parent
GOOD = sorted((HERE / "manifests" / "good").glob("*.yaml"))
BAD = sorted((HERE / "manifests" / "bad").glob("*.yaml"))
EXPECT = b"# expect: "


def expected_lines(path: Path, shown_as: str) -> list[str]:
    lines = path.read_bytes().splitlines()
    found = [line[len(EXPECT):].decode() for line in lines if line.startswith(EXPECT)]
    return [line.replace("{file}", shown_as) for line in found]


def problem_lines(path: Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        load_manifest(path)
    return [str(problem) for problem in caught.value.problems]


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Manifest:
    return load_manifest(write(tmp_path, text))


def problems_of(tmp_path: Path, text: str) -> list[str]:
    return problem_lines(write(tmp_path, text))


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems name files relative to the current folder: keep them short. A fresh cache, so
    every manifest goes through the schema."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))


MINIMAL = "version: 1\nmodels:\n  - {name: m, onnx: m.onnx, targets: [default]}\n"


def test_there_are_enough_example_manifests() -> None:
    assert len(GOOD) >= 4
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_manifest_loads(path: Path) -> None:
    manifest = load_manifest(path)
    assert manifest.models
    assert manifest.output.is_relative_to(path.parent)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_manifest_reports_exactly_the_expected_problems(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE.parent)
    shown_as = str(path.relative_to(HERE.parent))
    expected = expected_lines(path, shown_as)
    assert expected, f"{path.name} has no '# expect:' lines"
    assert sorted(problem_lines(path)) == sorted(expected)


def test_bad_manifest_problems_all_carry_line_column_and_json_path() -> None:
    for path in BAD:
        with pytest.raises(InputError) as caught:
            load_manifest(path)
        for problem in caught.value.problems:
            assert problem.line and problem.column and problem.json_path, (path.name, problem)


# the issue's example, object by object


def test_issue_example_becomes_typed_objects() -> None:
    manifest = load_manifest(HERE / "manifests" / "good" / "issue-example.yaml")
    folder = (HERE / "manifests" / "good").absolute()
    assert manifest.path == folder / "issue-example.yaml"
    assert manifest.output == folder / "engines"
    assert manifest.output_rel == "engines"
    assert manifest.targets == (
        Target("ampere-plus", ccs=(CC(8, 0), CC(8, 6), CC(8, 9), CC(12, 0))),
        Target("rtx40", ccs=(CC(8, 9),)),
    )
    (model,) = manifest.models
    assert model.name == "ocr-det"
    assert model.onnx == folder / "models" / "det.onnx"
    assert model.onnx_rel == "models/det.onnx"
    assert model.targets == (
        Target("default"),
        Target("rtx40", ccs=(CC(8, 9),)),
        Target("sm75", ccs=(CC(7, 5),)),
    )
    assert model.weightless == (False, True)
    assert model.profiles[0].shapes == (
        InputShape("x", (1, 3, 32, 32), (1, 3, 640, 640), (1, 3, 1280, 1280)),
    )
    assert model.builder == BuilderOptions(optimization_level=3)
    assert manifest.exclude == (Exclusion(model="ocr-det", target="sm75", weightless=True),)


def test_shape_input_values_become_a_value_range_beside_dims() -> None:
    manifest = load_manifest(HERE / "manifests" / "good" / "shape-values.yaml")
    image, sizes, shape = manifest.models[0].profiles[0].shapes
    assert image == InputShape("image", (1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 128, 128))
    assert sizes == InputShape(
        "sizes", values=ValueRange((1, 3, 16, 16), (1, 3, 128, 128), (4, 3, 256, 256))
    )
    assert not sizes.has_dims and image.has_dims
    assert shape.values == ValueRange((-1, 4), (-1, 4), (-1, 4))
    # Dims-only entries keep their old form (fingerprints of existing manifests hold).
    assert manifest.models[0].profiles[0].as_dict()["image"] == {
        "min": [1, 3, 32, 32],
        "opt": [1, 3, 64, 64],
        "max": [4, 3, 128, 128],
    }
    assert manifest.models[0].profiles[0].as_dict()["shape"] == {
        "values": {"min": [-1, 4], "opt": [-1, 4], "max": [-1, 4]}
    }


def test_an_input_may_give_both_dims_and_values(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "targets: [default]}",
        "targets: [default], profiles: [{s: {min: [2], opt: [2], max: [2], "
        "values: {min: [1, 1], opt: [2, 2], max: [3, 3]}}}]}",
    )
    (shape,) = load_text(tmp_path, text).models[0].profiles[0].shapes
    assert shape == InputShape("s", (2,), (2,), (2,), ValueRange((1, 1), (2, 2), (3, 3)))


def test_locations_are_one_based_line_and_column() -> None:
    manifest = load_manifest(HERE / "manifests" / "good" / "issue-example.yaml")
    assert manifest.locations["$"] == (1, 1)
    assert manifest.locations["$.models"] == (8, 1)
    assert manifest.locations["$.models[0]"] == (9, 5)
    assert manifest.locations["$.models[0].targets[2]"] == (11, 31)
    assert manifest.locations["$.targets.ampere-plus[1]"] == (4, 23)
    assert manifest.locate("$.models[0].profiles[0].x.min[9]") == (14, 13)


# compute capabilities and targets


@pytest.mark.parametrize("spelling", ["sm86", "SM86", '"8.6"', "86", "kSM86", "8.6", "sm_86"])
def test_every_cc_spelling_is_canonicalised(tmp_path: Path, spelling: str) -> None:
    manifest = load_text(
        tmp_path,
        f"version: 1\ntargets:\n  set: [{spelling}]\n"
        f"models:\n  - {{name: m, onnx: m.onnx, targets: [{spelling}, set]}}\n"
        f"exclude:\n  - {{target: {spelling}}}\n",
    )
    assert manifest.models[0].targets == (Target("sm86", (CC(8, 6),)), Target("set", (CC(8, 6),)))
    assert manifest.exclude == (Exclusion(target="sm86"),)


def test_yaml_floats_with_zero_minor_are_ccs(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path, "version: 1\nmodels:\n  - {name: m, onnx: m.onnx, targets: [8.0, 12.0, 12.1]}\n"
    )
    assert [t.name for t in manifest.models[0].targets] == ["sm80", "sm120", "sm121"]


def test_named_set_duplicates_after_canonicalisation_are_reported(tmp_path: Path) -> None:
    lines = problems_of(
        tmp_path,
        "version: 1\ntargets:\n  mixed: [sm89, current, sm80, 8.9]\n"
        "models:\n  - {name: m, onnx: m.onnx, targets: [default, current, mixed]}\n",
    )
    assert lines == ["m.yaml:3:32: $.targets.mixed[3]: duplicate 'sm89' (already item 0)"]


def test_named_set_keeps_current_and_sorts_ccs(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        "version: 1\ntargets:\n  mixed: [sm89, current, sm80]\n"
        "models:\n  - {name: m, onnx: m.onnx, targets: [default, current, mixed]}\n",
    )
    assert manifest.targets == (Target("mixed", (CC(8, 0), CC(8, 9)), current=True),)
    assert manifest.models[0].targets == (
        Target("default"),
        Target("current", current=True),
        Target("mixed", (CC(8, 0), CC(8, 9)), current=True),
    )


# builder options


@pytest.mark.parametrize(
    ("written", "size"),
    [("4096", 4096), ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1GB", 10**9),
     ("1.5 KiB", 1536), ("64kb", 64_000), ("3 B", 3)],
)
def test_workspace_sizes(written: str, size: int) -> None:
    assert parse_size(written) == size


def test_workspace_in_manifest_becomes_bytes(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, "version: 1\nbuilder: {workspace: 2GiB}\n" + MINIMAL[11:])
    assert manifest.builder.workspace_bytes == 2 * 2**30
    assert manifest.models[0].builder.workspace_bytes == 2 * 2**30


@pytest.mark.parametrize("written", ["lots", "2 potatoes", "", "1.2.3MiB"])
def test_workspace_rejects_non_sizes(written: str) -> None:
    assert parse_size(written) is None


def test_model_builder_overrides_manifest_builder_key_by_key(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        "version: 1\n"
        "builder: {optimization_level: 3, tiling_optimization_level: fast, workspace: 1024}\n"
        "models:\n"
        "  - {name: a, onnx: a.onnx, targets: [default]}\n"
        "  - name: b\n    onnx: b.onnx\n    targets: [default]\n"
        "    builder: {optimization_level: 0, max_aux_streams: 4}\n",
    )
    assert manifest.models[0].builder == manifest.builder
    assert manifest.models[1].builder == BuilderOptions(
        optimization_level=0, tiling_optimization_level="fast", max_aux_streams=4,
        workspace_bytes=1024,
    )


# models


def test_defaults_index_and_weightless_dedup(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        "version: 1\nmodels:\n"
        "  - {name: a, onnx: a.onnx, targets: [default]}\n"
        "  - {name: b, onnx: /abs/b.onnx, targets: [default], weightless: [true, false, true]}\n"
        "  - {name: c, onnx: c.onnx, targets: [default], weightless: true}\n",
    )
    a, b, c = manifest.models
    assert (a.index, b.index, c.index) == (0, 1, 2)
    assert a.weightless == (False,)
    assert b.weightless == (True, False)
    assert c.weightless == (True,)
    assert b.onnx == Path("/abs/b.onnx")
    assert manifest.output == tmp_path.absolute() / "engines"
    assert manifest.output_rel == "engines"


def test_family_defaults_to_the_model_name_and_keeps_manifest_order(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        "version: 1\nmodels:\n"
        "  - {name: det-fp8, family: det, onnx: a.onnx, targets: [default]}\n"
        "  - {name: det-fp16, family: det, onnx: b.onnx, targets: [default]}\n"
        "  - {name: cls, onnx: c.onnx, targets: [default]}\n",
    )
    assert [(m.name, m.family) for m in manifest.models] == [
        ("det-fp8", "det"), ("det-fp16", "det"), ("cls", "cls"),
    ]


def test_a_bad_family_name_is_reported_where_it_stands(tmp_path: Path) -> None:
    text = MINIMAL.replace("{name: m,", "{name: m, family: 'a b',")
    assert problems_of(tmp_path, text) == [
        "m.yaml:3:15: $.models[0].family: 'a b' is not a valid name: use letters, digits, '.', "
        "'_' and '-', starting with a letter or a digit"
    ]


def test_missing_onnx_file_is_not_the_loaders_business(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, MINIMAL)
    assert not manifest.models[0].onnx.exists()


def test_all_problems_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    lines = problems_of(
        tmp_path,
        "version: 1\noutput: ../out\nmodels:\n"
        "  - {name: a, onnx: a.onnx, targets: [sm90], weightless: maybe}\n"
        "  - {name: a, onnx: a.onnx, targets: [default], colour: red}\n",
    )
    assert [line.split(": ", 2)[1] for line in lines] == [
        "$.output",
        "$.models[0].targets[0]",
        "$.models[0].weightless",
        "$.models[1].name",
        "$.models[1].colour",
    ]


# output folder


def test_output_symlink_pointing_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "project" / "engines")
    path = write(tmp_path / "project", MINIMAL)
    with pytest.raises(InputError) as caught:
        load_manifest(path)
    (problem,) = caught.value.problems
    # `output` is not written: the default is blamed, located at the top of the file.
    assert (problem.line, problem.column, problem.json_path) == (1, 1, "$.output")
    assert problem.message == (
        f"output 'engines' leads to {str(tmp_path / 'elsewhere')!r} through a symlink, "
        "outside the manifest's folder"
    )


def test_output_symlink_staying_inside_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "engines")
    manifest = load_text(tmp_path, MINIMAL)
    assert manifest.output == tmp_path.absolute() / "engines"


def test_output_absolute_inside_the_folder_is_fine(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, f"output: {tmp_path}/out/./x\n" + MINIMAL)
    assert manifest.output == tmp_path / "out" / "x"


# files that are not manifests at all


def test_missing_file() -> None:
    assert problem_lines(Path("nope.yaml")) == ["nope.yaml: no such manifest file"]


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert problem_lines(Path("dir.yaml")) == ["dir.yaml: cannot read the manifest: Is a directory"]


def test_empty_file(tmp_path: Path) -> None:
    expected = "m.yaml:1:1: $: the manifest is empty: start with 'version: 1'"
    assert problems_of(tmp_path, "") == [expected]


def test_display_path_is_relative_below_cwd_else_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "sub" / "m.yaml") == "sub/m.yaml"
    assert display_path(Path("m.yaml")) == "m.yaml"
    assert display_path(Path("/elsewhere/m.yaml")) == "/elsewhere/m.yaml"
    assert display_path(Path("../m.yaml")) == "../m.yaml"


# alias bombs


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        refs = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n" + billion_laughs())
    started = time.perf_counter()
    lines = problem_lines(path)
    elapsed = time.perf_counter() - started
    assert lines == [
        "m.yaml:7:5: $.l5: YAML aliases expand to more than 100,000 nodes (an alias bomb?): refused"
    ]
    # Expanded, these aliases are 387 million nodes: minutes. Refused, a few ms; the bound is
    # loose because CI machines are shared.
    assert elapsed < 5


def test_small_aliases_are_fine(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        "version: 1\ntargets:\n  t: &ccs [sm86, sm89]\n  u: *ccs\n" + MINIMAL[11:],
    )
    assert [t.ccs for t in manifest.targets] == [(CC(8, 6), CC(8, 9))] * 2


# what the user sees


def test_bad_manifest_is_reported_as_error_lines_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "version: 1\nmodels:\n  - {name: a, onnx: a.onnx, targets: [sm90]}\n"
                 "exclude: [{modle: a}]\n")
    with pytest.raises(InputError) as caught:
        load_manifest(path)
    report_error(caught.value)
    assert caught.value.exit_code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: m.yaml:3:39: $.models[0].targets[0]: 'sm90' (9.0) is not a TensorRT-RTX target: "
        "it builds for sm75, sm80, sm86, sm89, sm120, sm121",
        "error: m.yaml:4:12: $.exclude[0].modle: unknown key 'modle', did you mean 'model'?",
    ]
