"""Translating jsonschema's errors into one friendly line per real problem."""

from __future__ import annotations

from typing import Any

from matrix.manifest.schema_check import schema_issues

MODEL = {"name": "m", "onnx": "m.onnx", "targets": ["default"]}


def manifest(**changes: Any) -> dict[str, Any]:
    model = {**MODEL, **changes.pop("model", {})}
    return {"version": 1, "models": [model], **changes}


def test_valid_data_has_no_issues() -> None:
    assert schema_issues(manifest(builder={"workspace": "2GiB"})) == []


def test_unknown_key_with_suggestion_points_at_the_key() -> None:
    assert schema_issues(manifest(builder={"optimisation_level": 2})) == [
        (
            "$.builder.optimisation_level",
            "unknown key 'optimisation_level', did you mean 'optimization_level'?",
        ),
    ]


def test_refused_option_explains_why() -> None:
    ((path, message),) = schema_issues(manifest(model={"builder": {"timing_cache": "x"}}))
    assert path == "$.models[0].builder.timing_cache"
    assert message == (
        "'timing_cache' is not accepted: TensorRT-RTX has no timing cache to configure"
    )


def test_refused_option_outside_builder_still_says_why_it_is_refused() -> None:
    assert schema_issues(manifest(timing_cache="x")) == [
        (
            "$.timing_cache",
            "'timing_cache' is not accepted: TensorRT-RTX has no timing cache to configure",
        ),
    ]


def test_option_outside_builder_says_where_it_goes() -> None:
    assert schema_issues(manifest(max_aux_stream=2)) == [
        (
            "$.max_aux_stream",
            "unknown key 'max_aux_stream': build options go under `builder:` "
            "(did you mean 'max_aux_streams'?)",
        ),
    ]


def test_any_of_reports_the_branch_the_value_was_meant_for() -> None:
    assert schema_issues(manifest(model={"weightless": [True, "no"]})) == [
        ("$.models[0].weightless[1]", "must be true or false (got 'no')"),
    ]


def test_any_of_with_no_fitting_branch_gives_one_summary_line() -> None:
    assert schema_issues(manifest(model={"weightless": {"a": 1}})) == [
        (
            "$.models[0].weightless",
            "must be true, false or a non-empty list of them (got a mapping)",
        ),
    ]


def test_type_errors_name_the_item_type_of_lists() -> None:
    assert schema_issues({"version": 1, "models": "m"}) == [
        ("$.models", "must be a list of mappings (got 'm')"),
    ]


def test_enum_lists_choices_and_suggests() -> None:
    assert schema_issues(manifest(builder={"tiling_optimization_level": "Full"})) == [
        (
            "$.builder.tiling_optimization_level",
            "must be one of 'none', 'fast', 'moderate', 'full' (got 'Full'), did you mean 'full'?",
        ),
    ]


def test_bounds_and_booleans_are_not_integers() -> None:
    assert schema_issues(manifest(builder={"optimization_level": True, "max_aux_streams": -2})) == [
        ("$.builder.optimization_level", "must be an integer (got True)"),
        ("$.builder.max_aux_streams", "must be at least 0 (got -2)"),
    ]


def test_invalid_set_name_points_at_the_key() -> None:
    ((path, message),) = schema_issues(manifest(targets={"a b": ["sm86"]}))
    assert path == "$.targets['a b']"
    assert message.startswith("'a b' is not a valid name")


def test_long_values_are_shortened() -> None:
    ((_, message),) = schema_issues(manifest(model={"onnx": 1234567890 * 10**40}))
    assert message == "must be a string (got 1234567890000000000000000000000000000...)"


def test_integers_and_numbers_are_named_once() -> None:
    assert schema_issues(manifest(model={"targets": [True]})) == [
        ("$.models[0].targets[0]", "must be a string or a number (got True)"),
    ]
