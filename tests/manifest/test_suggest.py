"""'Did you mean' hints."""

from __future__ import annotations

from matrix.manifest.suggest import did_you_mean

KEYS = ["optimization_level", "tiling_optimization_level", "max_aux_streams", "workspace"]


def test_british_spelling_finds_the_key() -> None:
    assert did_you_mean("optimisation_level", KEYS) == ", did you mean 'optimization_level'?"


def test_case_only_difference_wins_over_closer_looking_words() -> None:
    assert did_you_mean("SM86", ["sm80", "sm86", "sm89"]) == ", did you mean 'sm86'?"


def test_nothing_close_gives_nothing() -> None:
    assert did_you_mean("colour", KEYS) == ""
    assert did_you_mean("anything", []) == ""


def test_never_suggests_the_word_itself() -> None:
    assert did_you_mean("workspace", ["workspace"]) == ""


def test_accepts_any_iterable_once() -> None:
    assert did_you_mean("ampere-pluss", iter(["ampere-plus", "rtx40"])) == (
        ", did you mean 'ampere-plus'?"
    )
