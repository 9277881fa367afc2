from __future__ import annotations

import pytest

from matrix.plan.capabilities import CC, KNOWN, ccs_of_mask, is_known, mask_of, parse_cc


@pytest.mark.parametrize("text", ["sm86", "SM86", "8.6", 86, 8.6, "kSM86", "sm_86", " sm86 "])
def test_every_spelling_parses(text: object) -> None:
    assert parse_cc(text) == CC(8, 6)


@pytest.mark.parametrize("text", ["sm120", "12.0", 120, "kSM120"])
def test_two_digit_major(text: object) -> None:
    assert parse_cc(text).name == "sm120"


@pytest.mark.parametrize("text", ["ampere", "", "sm", "8.", True, "8.6.1"])
def test_not_a_cc(text: object) -> None:
    with pytest.raises(ValueError, match="is not a compute capability"):
        parse_cc(text)


def test_sm90_parses_but_is_not_a_target() -> None:
    assert not is_known(parse_cc("sm90"))
    assert all(is_known(cc) for cc in KNOWN)


def test_mask_round_trip() -> None:
    assert mask_of(KNOWN[1:], newer=True) == 0x7E
    assert ccs_of_mask(0x7E) == (KNOWN[1:], True)
    assert ccs_of_mask(mask_of((CC(7, 5), CC(8, 6)))) == ((CC(7, 5), CC(8, 6)), False)
