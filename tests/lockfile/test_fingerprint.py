"""Fingerprints change exactly when an input that decides the engine bytes changes."""

from __future__ import annotations

from dataclasses import replace

from matrix.lockfile.fingerprint import fingerprint, plan_identity
from matrix.manifest.types import BuilderOptions
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
