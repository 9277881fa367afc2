"""Profile rules against the real TensorRT-RTX builder: shape inputs and shared dim names.

Each case is a small generated model and one optimization profile. The planner's verdict must
match what `matrix.build.builder.build` (the real library, on this CPU-only host) does with
that profile: `build` exactly when an engine comes out, else rejected by the case's rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.build.builder import build
from matrix.build.messages import BuildResult
from matrix.facts.onnx_inspect import inspect_model
from matrix.manifest.types import InputShape, Profile, ValueRange
from matrix.plan import rules as R
from matrix.plan.planner import make_plan
from matrix.plan.types import Cell, Severity, Verdict
from tests import modelgen
from tests.factories import build_request, manifest, model, target

Dims = tuple[int | str | None, ...]
Range = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

NCHW_EQUAL = ((1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64))
NCHW_OPT_APART = ((1, 3, 16, 16), (1, 3, 32, 48), (1, 3, 64, 64))
NCHW_MIN_APART = ((1, 3, 16, 32), (1, 3, 32, 32), (1, 3, 64, 64))
NCHW_MAX_APART = ((1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 96))
NCHW_ONE_SIZE = ((1, 3, 16, 48), (1, 3, 16, 64), (1, 3, 48, 64))
NCHW_FIXED_H = ((1, 3, 48, 48), (1, 3, 48, 192), (8, 3, 48, 320))

# (input dims, one dims range per input, rule that rejects or None, warns)
NAMED_CASES: dict[str, tuple[tuple[Dims, ...], tuple[Range, ...], str | None, bool]] = {
    "same-name-equal": (((1, 3, "S", "S"),), (NCHW_EQUAL,), None, False),
    "same-name-opt-apart": (((1, 3, "S", "S"),), (NCHW_OPT_APART,), R.PROFILE_SHARED_DIMS, False),
    "same-name-min-apart": (((1, 3, "S", "S"),), (NCHW_MIN_APART,), None, True),
    "same-name-max-apart": (((1, 3, "S", "S"),), (NCHW_MAX_APART,), None, True),
    # The PP-OCR classifier names H and W "?": the library ties them like any name.
    "question-marks-opt-apart": (
        ((1, 3, "?", "?"),),
        (NCHW_OPT_APART,),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
    "unk-names-opt-apart": (
        ((1, 3, "unk__1", "unk__1"),),
        (NCHW_OPT_APART,),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
    "unnamed-opt-apart": (((1, 3, None, None),), (NCHW_OPT_APART,), None, False),
    "minus-one-opt-apart": (((1, 3, "-1", "-1"),), (NCHW_OPT_APART,), None, False),
    "two-names-opt-apart": (((1, 3, "H", "W"),), (NCHW_OPT_APART,), None, False),
    "batch-tied-to-spatial": (
        (("N", 3, "N", "N"),),
        (NCHW_EQUAL,),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
    "across-inputs-opt-apart": (
        (("B", 4), ("B", 4)),
        (((1, 4), (2, 4), (8, 4)), ((1, 4), (4, 4), (8, 4))),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
    "across-inputs-max-apart": (
        (("B", 4), ("B", 4)),
        (((1, 4), (2, 4), (8, 4)), ((1, 4), (2, 4), (16, 4))),
        None,
        True,
    ),
    "across-inputs-disjoint": (
        (("B", 4), ("B", 4)),
        (((1, 4), (2, 4), (2, 4)), ((4, 4), (4, 4), (8, 4))),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
    "across-inputs-min-apart": (
        (("B", 4), ("B", 4)),
        (((1, 4), (2, 4), (8, 4)), ((2, 4), (2, 4), (8, 4))),
        None,
        True,
    ),
    # Ranges that overlap in one size tie the dims to it: opt no longer matters.
    "one-size-overlap-opt-apart": (((1, 3, "S", "S"),), (NCHW_ONE_SIZE,), None, True),
    "fixed-dim-opt-apart": (((None, 3, "?", "?"),), (NCHW_FIXED_H,), None, True),
    "opt-apart-inside-overlap": (
        ((1, 3, "S", "S"),),
        (((1, 3, 16, 32), (1, 3, 40, 48), (1, 3, 64, 48)),),
        R.PROFILE_SHARED_DIMS,
        False,
    ),
}


def plan_and_build(
    tmp_path: Path, onnx: Path, profiles: tuple[Profile, ...]
) -> tuple[Cell, BuildResult]:
    m = model(targets=(target("default"),), profiles=profiles)
    plan = make_plan(manifest(m), {"m": inspect_model(onnx)})
    (cell,) = plan.cells
    result = build(build_request(tmp_path, onnx, profiles=profiles))
    return cell, result


@pytest.mark.parametrize("case", NAMED_CASES)
def test_shared_dim_names_agree_with_the_builder(tmp_path: Path, case: str) -> None:
    dims, ranges, rule, warns = NAMED_CASES[case]
    onnx = modelgen.named_dims_model(tmp_path / "m.onnx", dims)
    profile = Profile(tuple(InputShape(f"x{i}", *r) for i, r in enumerate(ranges)))
    cell, result = plan_and_build(tmp_path, onnx, (profile,))
    assert result.ok == (rule is None), result.error
    if rule is None:
        assert cell.verdict is Verdict.BUILD, cell.reasons
    else:
        assert cell.verdict is Verdict.REJECTED
        assert {r.rule for r in cell.errors} == {rule}
    assert bool(cell.warnings) == warns, cell.warnings


def test_shared_dims_reasons_name_input_dims_and_sizes(tmp_path: Path) -> None:
    # The PP-OCR classifier's input, [-1, 3, ?, ?], profiled for text lines 48 high.
    onnx = modelgen.named_dims_model(tmp_path / "m.onnx", ((None, 3, "?", "?"),))
    disjoint = Profile((InputShape("x0", (1, 3, 48, 192), (1, 3, 48, 192), (8, 3, 48, 320)),))
    cell, result = plan_and_build(tmp_path, onnx, (disjoint,))
    assert result.error is not None and "contradictory IOptimizationProfile" in result.error
    assert [r.message for r in cell.errors] == [
        "profiles[0]: input 'x0' dims 2 and 3 share the name '?', so TensorRT-RTX takes them "
        "as equal, but their ranges 48..48 and 192..320 do not overlap: give them one range"
    ]
    narrowed = Profile((InputShape("x0", *NCHW_FIXED_H),))
    cell, result = plan_and_build(tmp_path, onnx, (narrowed,))
    assert result.ok and cell.verdict is Verdict.BUILD
    assert [r.message for r in cell.warnings] == [
        "profiles[0]: input 'x0' dims 2 and 3 share the name '?', so TensorRT-RTX takes them "
        "as equal: the engine accepts only 48 for them (ranges 48..48 and 48..320)"
    ]


RESHAPE_VALUES = ValueRange((3, 4), (3, 4), (3, 4))


@pytest.mark.parametrize(
    ("profiles", "rule", "library_says"),
    [
        ((), R.SHAPE_INPUT_NEEDS_VALUES, "no optimization profile has been defined"),
        ((Profile((InputShape("s", values=RESHAPE_VALUES),)),), None, None),
        (
            (Profile((InputShape("x", (2, 6), (2, 6), (2, 6)),)),),
            R.SHAPE_INPUT_NEEDS_VALUES,
            "missing values for shape input tensor s",
        ),
    ],
    ids=["no-profile", "values", "dims-only"],
)
def test_shape_input_builds_with_values_and_fails_without(
    tmp_path: Path, profiles: tuple[Profile, ...], rule: str | None, library_says: str | None
) -> None:
    onnx = modelgen.shape_input_model(tmp_path / "m.onnx")
    cell, result = plan_and_build(tmp_path, onnx, profiles)
    if rule is None:
        assert result.ok, result.error
        assert Path(build_request(tmp_path, onnx).engine_path).stat().st_size > 1000
        assert cell.verdict is Verdict.BUILD
        return
    assert library_says is not None
    assert not result.ok and library_says in (result.error or ""), result.error
    assert cell.verdict is Verdict.REJECTED
    assert [(r.rule, r.severity) for r in cell.errors] == [(rule, Severity.ERROR)]


def test_values_the_library_refuses_fail_the_cell_in_one_line(tmp_path: Path) -> None:
    # The loader refuses min > opt before any build; straight to the builder, the library's
    # own words come back.
    onnx = modelgen.shape_input_model(tmp_path / "m.onnx")
    values = ValueRange((2, 6), (3, 4), (12, 1))
    profiles = (Profile((InputShape("s", values=values),)),)
    result = build(build_request(tmp_path, onnx, profiles=profiles))
    assert result.error == (
        "TensorRT-RTX refused the values of input 's' in profile 1: opt input provided for "
        "shape tensor is inconsistent with other inputs."
    )
