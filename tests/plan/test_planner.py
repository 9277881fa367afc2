"""The planner's verdicts, rule by rule, on hand-made facts (pure: nothing is built)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from matrix.facts import node_findings as nf
from matrix.facts.types import (
    BF16,
    FP4,
    FP8,
    FP8_E4M3FNUZ,
    FP8_E5M2,
    FP8_E5M2FNUZ,
    FP8_E8M0,
    FP16,
    FP32,
    INT2,
    INT4,
    INT8,
    UINT4,
    ModelFacts,
    NodeFinding,
    ParserCheck,
    ParserError,
)
from matrix.manifest.types import Exclusion, InputShape, Profile, Target, ValueRange
from matrix.plan import rules as R
from matrix.plan.capabilities import SM89
from matrix.plan.planner import expected_mask, make_plan
from matrix.plan.types import Cell, Verdict
from tests.factories import facts, manifest, model, profile, target


def one_cell(
    t: Target, f: ModelFacts, weightless: bool = False, profiles: tuple[Profile, ...] = ()
) -> Cell:
    m = model(targets=(t,), weightless=(weightless,), profiles=profiles)
    plan = make_plan(manifest(m), {"m": f})
    (cell,) = plan.cells
    return cell


def rules_of(cell: Cell) -> set[str]:
    return {r.rule for r in cell.reasons}


@pytest.mark.parametrize(
    ("dtype", "cc", "verdict"),
    [
        (FP4, "sm89", Verdict.REJECTED),
        (FP4, "sm120", Verdict.BUILD),
        (FP4, "sm121", Verdict.BUILD),
        (FP8, "sm86", Verdict.REJECTED),
        (FP8, "sm80", Verdict.REJECTED),
        (FP8, "sm75", Verdict.REJECTED),
        (FP8, "sm89", Verdict.BUILD),
        (FP8, "sm120", Verdict.BUILD),
        (BF16, "sm75", Verdict.REJECTED),
        (BF16, "sm80", Verdict.BUILD),
        (INT4, "sm75", Verdict.REJECTED),
        (INT4, "sm86", Verdict.BUILD),
        (INT8, "sm75", Verdict.BUILD),
        (FP16, "sm75", Verdict.BUILD),
        (FP32, "sm75", Verdict.BUILD),
    ],
)
def test_dtype_needs_cc(dtype: str, cc: str, verdict: Verdict) -> None:
    cell = one_cell(target(cc), facts(dtype))
    assert cell.verdict is verdict
    assert (R.DTYPE_NEEDS in rules_of(cell)) == (verdict is Verdict.REJECTED)


def test_fp8_rejected_when_any_listed_cc_cannot_run_it() -> None:
    cell = one_cell(target("mix", "sm80", "sm89"), facts(FP8))
    assert cell.verdict is Verdict.REJECTED
    (error,) = cell.errors
    assert error.message == "the model uses FP8, which needs CC 8.9 or newer; sm80 cannot run it"


@pytest.mark.parametrize(
    ("dtypes", "runs_on"),
    [
        ((FP32,), ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")),
        ((FP16, INT8), ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")),
        ((BF16,), ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")),
        ((FP8,), ("sm89", "sm120", "sm121", "newer")),
        ((FP8, FP4), ("sm120", "sm121", "newer")),
    ],
)
def test_default_runs_on_narrows_with_dtype(
    dtypes: tuple[str, ...], runs_on: tuple[str, ...]
) -> None:
    cell = one_cell(target("default"), facts(*dtypes))
    assert cell.verdict is Verdict.BUILD
    assert cell.runs_on == runs_on


def test_default_never_includes_turing() -> None:
    assert "sm75" not in one_cell(target("default"), facts(FP16)).runs_on


def test_explicit_ccs_run_on_exactly_those() -> None:
    cell = one_cell(target("set", "sm86", "8.9", "SM120"), facts(FP16))
    assert cell.runs_on == ("sm86", "sm89", "sm120")
    assert expected_mask(cell) == 0b11100  # bits: sm86=2, sm89=3, sm120=4


def test_fp32_gemm_refused_on_turing_only() -> None:
    refused = one_cell(target("sm75"), facts(FP32, fp32_gemm=True))
    assert refused.verdict is Verdict.REJECTED
    assert rules_of(refused) >= {R.TURING_FP32_GEMM}
    assert one_cell(target("sm80"), facts(FP32, fp32_gemm=True)).verdict is Verdict.BUILD
    conv_only = one_cell(target("sm75"), facts(FP32, fp32_gemm=False))
    assert conv_only.verdict is Verdict.BUILD


def test_turing_mixed_with_others_warns() -> None:
    cell = one_cell(target("mix", "sm75", "sm86"), facts(FP16))
    assert cell.verdict is Verdict.BUILD
    (warning,) = cell.warnings
    assert warning.rule == R.TURING_MIXED
    assert one_cell(target("sm75"), facts(FP16)).warnings == ()


def test_current_must_be_alone() -> None:
    cell = one_cell(target("odd", "sm86", current=True), facts(FP16))
    assert cell.verdict is Verdict.REJECTED
    assert rules_of(cell) == {R.CURRENT_ALONE}


def test_current_needs_gpu_and_is_judged_once_resolved() -> None:
    cell = one_cell(target("current"), facts(FP8))
    assert cell.verdict is Verdict.NEEDS_GPU
    assert cell.runs_on == ("current",)
    m = model(targets=(target("current"),))
    resolved = make_plan(manifest(m), {"m": facts(FP8)}, current=SM89).cells[0]
    assert resolved.runs_on == ("sm89",)
    assert expected_mask(resolved) is None
    from matrix.plan.capabilities import SM86

    too_old = make_plan(manifest(m), {"m": facts(FP8)}, current=SM86).cells[0]
    assert too_old.verdict is Verdict.REJECTED


def test_weightless_needs_gpu_and_at_most_one_cc() -> None:
    ok = one_cell(target("sm86"), facts(FP16), weightless=True)
    assert ok.verdict is Verdict.NEEDS_GPU
    assert ok.id == "m@sm86+weightless"
    assert R.WEIGHTLESS_NEEDS_GPU in rules_of(ok)
    two = one_cell(target("pair", "sm86", "sm89"), facts(FP16), weightless=True)
    assert two.verdict is Verdict.REJECTED
    assert R.WEIGHTLESS_ONE_CC in rules_of(two)


def test_dynamic_input_needs_profile() -> None:
    cell = one_cell(target("sm86"), facts(FP16, dynamic=True))
    assert cell.verdict is Verdict.REJECTED
    assert rules_of(cell) == {R.DYNAMIC_NEEDS_PROFILE}
    with_profile = one_cell(
        target("sm86"),
        facts(FP16, dynamic=True),
        profiles=(profile(x=((1, 8), (4, 8), (8, 8))),),
    )
    assert with_profile.verdict is Verdict.BUILD


def test_shape_input_needs_values_in_every_profile() -> None:
    shaped = replace(facts(FP32), shape_inputs=("x",))
    (error,) = one_cell(target("sm86"), shaped).errors
    assert (error.rule, error.message) == (
        R.SHAPE_INPUT_NEEDS_VALUES,
        "input 'x' holds a shape (its values size the network) and the model has no "
        "optimization profile; add `profiles:` with "
        "`x: {values: {min: [...], opt: [...], max: [...]}}`",
    )
    dims_only = profile(x=((1, 8), (1, 8), (1, 8)))
    with_values = Profile((InputShape("x", values=ValueRange((1,), (2,), (3,))),))
    cell = one_cell(target("sm86"), shaped, profiles=(with_values, dims_only))
    assert [r.message for r in cell.errors] == [
        "profiles[1] gives no values for shape input 'x'; "
        "add `x: {values: {min: [...], opt: [...], max: [...]}}`"
    ]
    assert one_cell(target("sm86"), shaped, profiles=(with_values,)).verdict is Verdict.BUILD


def test_values_alone_give_a_dynamic_input_no_shapes() -> None:
    with_values = Profile((InputShape("x", values=ValueRange((1,), (2,), (3,))),))
    cell = one_cell(target("sm86"), facts(FP16, dynamic=True), profiles=(with_values,))
    assert [(r.rule, r.message) for r in cell.errors] == [
        (R.DYNAMIC_NEEDS_PROFILE, "profiles[0] gives no shapes for dynamic input 'x'")
    ]


def test_exclusions_match_on_any_subset() -> None:
    m = model(targets=(target("default"), target("sm75")), weightless=(False, True))
    plan = make_plan(
        manifest(m, exclude=(Exclusion(target="sm75", weightless=True),)), {"m": facts(FP16)}
    )
    verdicts = {c.id: c.verdict for c in plan.cells}
    assert verdicts == {
        "m@default": Verdict.BUILD,
        "m@default+weightless": Verdict.NEEDS_GPU,
        "m@sm75": Verdict.BUILD,
        "m@sm75+weightless": Verdict.EXCLUDED,
    }


def test_cells_follow_manifest_order() -> None:
    a = model("a", targets=(target("sm86"), target("default")))
    b = model("b", targets=(target("sm89"),), weightless=(False, True))
    plan = make_plan(manifest(a, b), {"a": facts(), "b": facts()})
    assert [c.id for c in plan.cells] == [
        "a@sm86",
        "a@default",
        "b@sm89",
        "b@sm89+weightless",
    ]


def test_rules_table_lookup_by_release() -> None:
    from matrix.errors import MatrixError

    assert R.rules_for("1.7.1.116") is R.RULES_1_7
    with pytest.raises(MatrixError, match=r"no rules table for TensorRT-RTX 2\.0\.0"):
        R.rules_for("2.0.0")


# --- rules beyond the dtype table (docs/tensorrt-rtx.md) ------------------------------------


def finding(kind: str, node: str = "n1", op: str = "MatMul", detail: str = "FP32") -> NodeFinding:
    return NodeFinding(kind, node, op, detail)


def parsed(*errors: tuple[str, str, str]) -> ParserCheck:
    return ParserCheck("1.7.1.116", tuple(ParserError(*e) for e in errors))


ALL = ("default", "sm75", "sm80", "sm86", "sm89", "sm120")


def verdicts(f: ModelFacts) -> dict[str, Verdict]:
    return {name: one_cell(target(name), f).verdict for name in ALL}


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (nf.FP32_GEMM, R.TURING_FP32_GEMM),
        (nf.FP32_CONV3D, R.TURING_FP32_CONV3D),
        (nf.FP32_DECONV3D, R.TURING_FP32_CONV3D),
    ],
)
def test_turing_node_rules_reject_sm75_only(kind: str, rule: str) -> None:
    f = facts(FP32, nodes=(finding(kind, op="Conv"),))
    assert verdicts(f) == {n: Verdict.REJECTED if n == "sm75" else Verdict.BUILD for n in ALL}
    (error,) = one_cell(target("mix", "sm75", "sm86"), f).errors
    assert error.rule == rule
    assert "Conv node 'n1'" in error.message and "for sm75" in error.message
    assert "FP16" in error.message  # the fix


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (nf.HW_DTYPE_OP, R.HW_DTYPE_OUTSIDE_QDQ),
        (nf.QUANTIZED_CONSTANT, R.QUANTIZED_CONSTANT),
        (nf.QUANTIZED_SCALAR, R.QUANTIZED_SCALAR),
    ],
)
def test_everywhere_node_rules_reject_every_target(kind: str, rule: str) -> None:
    f = facts(FP16, nodes=(finding(kind, op="Cast", detail="makes 'y' (FP8)"),))
    assert set(verdicts(f).values()) == {Verdict.REJECTED}
    for t in (target("current"), target("sm86")):
        assert rule in {r.rule for r in one_cell(t, f).errors}
    assert one_cell(target("sm86"), f, weightless=True).verdict is Verdict.REJECTED


def test_many_findings_make_one_reason_naming_the_first() -> None:
    nodes = tuple(finding(nf.FP32_GEMM, node=f"mm{i}") for i in range(5))
    (error,) = one_cell(target("sm75"), facts(FP32, nodes=nodes)).errors
    assert "MatMul node 'mm0' (and 4 more) computes a GEMM in FP32" in error.message


@pytest.mark.parametrize("dtype", [FP8_E5M2, FP8_E4M3FNUZ, FP8_E5M2FNUZ, FP8_E8M0, INT2, UINT4])
def test_dtypes_the_library_never_imports_reject_every_target(dtype: str) -> None:
    f = facts(FP32, dtype)
    assert set(verdicts(f).values()) == {Verdict.REJECTED}
    (error,) = one_cell(target("sm120"), f).errors
    assert error.rule == R.DTYPE_UNSUPPORTED
    assert "FLOAT8E4M3FN only" in error.message
    # Not mistaken for the FP8 the library builds: no CC narrowing, no dtype-needs-cc.
    assert R.DTYPE_NEEDS not in rules_of(one_cell(target("sm86"), f))


def test_parser_error_rejects_every_target_naming_node_op_and_message() -> None:
    f = facts(FP32, parser=parsed(("pool", "MaxPool", "dilations other than 1")))
    assert set(verdicts(f).values()) == {Verdict.REJECTED}
    (error,) = one_cell(target("current"), f).errors
    assert error.rule == R.PARSER_UNSUPPORTED
    assert error.message == (
        "the TensorRT-RTX ONNX parser cannot import node 'pool' (MaxPool): dilations other than 1"
    )


def test_a_clean_parse_rejects_nothing() -> None:
    assert one_cell(target("sm86"), facts(FP16, parser=parsed())).verdict is Verdict.BUILD


@pytest.mark.parametrize(
    ("op", "message", "rule", "fix"),
    [
        ("QuantizeLinear", "Non-zero zero point is not supported", R.QDQ_ZERO_POINT, "symmetric"),
        (
            "DequantizeLinear",
            "input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8",
            R.QDQ_INT32_BIAS,
            "do not quantize the bias",
        ),
        ("DequantizeLinear", "Found unsupported input type of UINT8", R.QDQ_UINT8, "INT8"),
        ("DequantizeLinear", "Scale coefficients must all be positive", R.QDQ_SCALE, "positive"),
        ("QLinearConv", "unsupported operator", R.QDQ_ONLY, "QuantFormat.QDQ"),
        ("MatMulInteger", "unsupported operator", R.QDQ_ONLY, "QuantFormat.QDQ"),
        ("MatMul", "must have same input types", R.MIXED_INPUT_TYPES, "one type"),
    ],
)
def test_known_parser_errors_name_their_rule_and_fix(
    op: str, message: str, rule: str, fix: str
) -> None:
    (error,) = one_cell(target("sm86"), facts(FP32, parser=parsed(("n", op, message)))).errors
    assert error.rule == rule
    assert fix in error.message
    assert f"node 'n' ({op}): {message}" in error.message


def test_parser_dtype_error_is_not_repeated_after_the_dtype_rule() -> None:
    f = facts(FP32, FP8_E5M2, parser=parsed(("", "", "Failed to import initializer: w")))
    assert [r.rule for r in one_cell(target("sm89"), f).errors] == [R.DTYPE_UNSUPPORTED]


def test_parser_errors_of_one_rule_make_one_reason() -> None:
    f = facts(FP32, parser=parsed(("a", "Pad", "x"), ("b", "Pad", "y"), ("", "", "z")))
    (error,) = one_cell(target("sm86"), f).errors
    assert "node 'a' (Pad) and 2 more: x" in error.message
