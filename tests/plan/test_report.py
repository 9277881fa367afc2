"""The plain-text summary of a plan, on hand-made cells (pure: nothing is built)."""

from __future__ import annotations

from matrix.plan.report import rejected_by_rule, summary_line
from matrix.plan.types import Cell, Plan, Reason, Severity, Verdict
from tests.factories import facts, manifest, model, target

M = model(targets=(target("sm75"),))


def cell(ident: str, verdict: Verdict, *rules: str) -> Cell:
    reasons = tuple(Reason(rule, "why", Severity.ERROR) for rule in rules)
    return Cell(ident, M, M.targets[0], False, verdict, reasons, (), False)


def test_rejected_cells_are_counted_by_rule_most_first() -> None:
    plan = Plan(
        manifest(M),
        (
            cell("a", Verdict.REJECTED, "turing-fp32-gemm"),
            cell("b", Verdict.REJECTED, "dtype-needs-cc", "turing-fp32-gemm"),
            cell("c", Verdict.REJECTED, "dtype-needs-cc", "dtype-needs-cc"),
            cell("d", Verdict.REJECTED, "turing-fp32-gemm"),
            cell("e", Verdict.BUILD),
        ),
        {"m": facts()},
        "1.7",
    )
    # A cell counts once per rule it breaks: b under both, c once.
    assert rejected_by_rule(plan) == {"turing-fp32-gemm": 3, "dtype-needs-cc": 2}
    assert summary_line(plan) == "1 build, 4 rejected (3 turing-fp32-gemm, 2 dtype-needs-cc)"


def test_no_cells() -> None:
    assert summary_line(Plan(manifest(), (), {}, "1.7")) == "no cells"
