"""Fingerprints change exactly when an input that decides the engine bytes changes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from matrix.lockfile.fingerprint import fingerprint, plan_identity, planned_fingerprint
from matrix.manifest.types import BuilderOptions, InputShape, Profile, ValueRange
from matrix.plan.load import load_plan
from matrix.plan.types import Cell, Plan, Verdict
from tests.factories import facts, manifest, model, target

FACTS = facts()


def cell(weightless: bool = False, **model_fields: object) -> Cell:
    m = replace(model(targets=(target("sm86"),)), **model_fields)  # type: ignore[arg-type]
    ident = "m@sm86" + ("+weightless" if weightless else "")
    return Cell(ident, m, m.targets[0], weightless, Verdict.BUILD, (), ("sm86",), weightless)


def test_same_inputs_same_fingerprint() -> None:
    assert fingerprint(cell(), FACTS, "1.7.1.116", ("sm86",)) == fingerprint(
        cell(), FACTS, "1.7.1.116", ("sm86",)
    )


def test_each_input_changes_it() -> None:
    base = fingerprint(cell(), FACTS, "1.7.1.116", ("sm86",))
    changed = {
        fingerprint(cell(), FACTS, "1.7.2.1", ("sm86",)),
        fingerprint(cell(), FACTS, "1.7.1.116", ("sm89",)),
        fingerprint(cell(), replace(FACTS, digest="x"), "1.7.1.116", ("sm86",)),
        fingerprint(
            cell(builder=BuilderOptions(optimization_level=1)), FACTS, "1.7.1.116", ("sm86",)
        ),
        fingerprint(cell(weightless=True), FACTS, "1.7.1.116", ("sm86",)),
    }
    assert base not in changed
    assert len(changed) == 5


def test_weightless_ignores_weights_but_not_graph() -> None:
    base = fingerprint(cell(True), FACTS, "1.7.1.116", ("sm86",))
    new_weights = replace(FACTS, digest="d2", weights_digest="w2")
    assert fingerprint(cell(True), new_weights, "1.7.1.116", ("sm86",)) == base
    new_graph = replace(FACTS, digest="d2", graph_digest="g2")
    assert fingerprint(cell(True), new_graph, "1.7.1.116", ("sm86",)) != base
    assert fingerprint(cell(False), new_weights, "1.7.1.116", ("sm86",)) != fingerprint(
        cell(False), FACTS, "1.7.1.116", ("sm86",)
    )


def test_plan_identity_covers_buildable_cells_only() -> None:
    good, other = cell(), replace(cell(), id="m@x", verdict=Verdict.REJECTED)
    plan = Plan(manifest(good.model), (good, other), {"m": FACTS}, "1.7.1.116")
    identity = plan_identity(plan, "1.7.1.116")
    assert identity.cells == ("m@sm86",)
    assert identity.digest != plan_identity(plan, "1.7.2.1").digest


def test_shape_input_values_change_it() -> None:
    def with_values(high: int) -> Cell:
        shape = InputShape("s", values=ValueRange((1, 1), (2, 2), (high, high)))
        return cell(profiles=(Profile((shape,)),))

    base = fingerprint(with_values(8), FACTS, "1.7.1.116", ("sm86",))
    assert fingerprint(with_values(8), FACTS, "1.7.1.116", ("sm86",)) == base
    assert fingerprint(with_values(9), FACTS, "1.7.1.116", ("sm86",)) != base
    assert fingerprint(cell(), FACTS, "1.7.1.116", ("sm86",)) != base


DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "rtx-matrix.yaml"
DEMO_FINGERPRINTS = {
    # Computed before shape-input values existed: a manifest without them keeps its
    # fingerprints, so nothing in an existing lock rebuilds.
    "classifier@default": "b4238d992d08e74c8fb5d2c4ee4586be86c676899a62e2d96d58138f5d5cb9cb",
    "classifier@default+weightless": (
        "382430abc0f3e403ca0e0e529e59d9ebdc4b09e740cf0bd2c41d0f72e70213f8"
    ),
    "classifier@rtx40": "5681879c16456f7bc916638cb1d8466b2cb4f808fcc56733e35c368c1f02a6ad",
    "classifier@rtx40+weightless": (
        "c0b8fc9b239e47ec340c776304b794a240dd2e3cb46ccb512ae4296b3a1e4a28"
    ),
    "classifier@sm75": "5f3fd3dc8af376696ea80a130ae038a44cc61f18de47f587abcb5ab72856ca55",
    "detector@default": "0e985b3e8ff8532bbfee59df830412029af85b125325939a5a47f878369406a8",
    "detector@ampere-plus": "9379876e8250ff2f5c66a0a916a8a5c19f21a80edb55140cc069cc5f538dee05",
    "detector@sm75": "1bd8ba8213e008dbada772b1e169fa3ff6f79046ec43df3d8184bfa158db27f4",
    "ranker@default": "a9db5d2b575235dfe6ca2d30b8a691c1b22476ff2598287e67cb15c88cef204c",
    "ranker@ampere-plus": "32a74bb65dc2d78de1031dac3a4bed4b909140dd59809243a5b15517399aacdb",
    "fp8-head@default": "7ec5162f92a5b7c4a7499e228fc66fd0d6eaf05319516318aa1a180ba16d24d5",
    "fp8-head@rtx40": "d6dc4a9331b8c228bcdcd7cd4412a942fe87659545f0c954327652e49fccfda2",
    "fp8-head@current": "22c3c85446a1c651f2c6dad0431a73aba655b831768ff4acc2c1407e1279786a",
}


def test_demo_fingerprints_do_not_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path))
    plan = load_plan(DEMO)
    assert {c.id: planned_fingerprint(c, plan, "1.7.1.116") for c in plan.buildable} == (
        DEMO_FINGERPRINTS
    )


def test_the_family_decides_no_engine_bytes() -> None:
    assert fingerprint(cell(family="other"), FACTS, "1.7.1.116", ("sm86",)) == fingerprint(
        cell(), FACTS, "1.7.1.116", ("sm86",)
    )


@pytest.mark.parametrize("weightless", [False, True])
def test_written_out_part_by_part_it_is_the_digest_of_the_inputs(weightless: bool) -> None:
    """`fingerprint` writes its canonical JSON itself, for speed: the same bytes as
    `digest_of` the inputs, with the model's options or options given by the caller."""
    from matrix.lockfile.fingerprint import FORMAT, build_options, digest_of

    c = cell(weightless=weightless, builder=BuilderOptions(optimization_level=2))
    given = BuilderOptions(optimization_level=5)
    for options in (None, given):
        recorded = build_options(c)
        if options is not None:
            recorded["builder"] = options.as_dict()
        inputs = {
            "format": FORMAT, "targets": ["sm86", "newer"], "gpu_build": False,
            "model": FACTS.graph_digest if weightless else FACTS.digest,
            "weightless": weightless, "options": recorded, "tensorrt_rtx": "1.7.1.116",
        }
        assert fingerprint(c, FACTS, "1.7.1.116", ("sm86", "newer"), options) == \
            digest_of(inputs)
