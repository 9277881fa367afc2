"""Render a Plan for people (a table) and for programs (JSON)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from matrix.plan import Cell, Plan, Severity, Verdict

VERDICT_STYLE = {
    Verdict.BUILD: "green",
    Verdict.NEEDS_GPU: "yellow",
    Verdict.REJECTED: "bold red",
    Verdict.EXCLUDED: "dim",
}


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "id": cell.id,
        "model": cell.model.name,
        "target": cell.target.name,
        "targets": list(cell.target.spec),
        "weightless": cell.weightless,
        "verdict": cell.verdict.value,
        "needs_gpu": cell.needs_gpu,
        "reasons": [
            {"rule": r.rule, "severity": r.severity.value, "message": r.message}
            for r in cell.reasons
        ],
        "runs_on": list(cell.runs_on),
    }


def plan_json(plan: Plan) -> str:
    return json.dumps(
        {"tensorrt_rtx": plan.tensorrt_rtx, "cells": [cell_json(c) for c in plan.cells]},
        indent=2,
    )


def reasons_text(cell: Cell) -> str:
    shown = [r for r in cell.reasons if r.severity is not Severity.INFO] or list(cell.reasons)
    return "\n".join(f"[{r.rule}] {r.message}" for r in shown)


def print_plan_table(plan: Plan, out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{plan.manifest.path.name}: {len(plan.cells)} cells", title_justify="left")
    table.add_column("cell", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("runs on")
    table.add_column("why")
    for cell in plan.cells:
        style = VERDICT_STYLE[cell.verdict]
        table.add_row(
            escape(cell.id),
            f"[{style}]{cell.verdict}[/]",
            " ".join(cell.runs_on),
            escape(reasons_text(cell)),
        )
    console = Console(file=out, width=None if out.isatty() else 160)
    console.print(table)
    console.print(summary_line(plan))


def summary_line(plan: Plan) -> str:
    counts = {v: len(plan.with_verdict(v)) for v in Verdict}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no cells"


def rejection_lines(plan: Plan) -> list[str]:
    return [
        f"{cell.id}: [{reason.rule}] {reason.message}"
        for cell in plan.rejected
        for reason in cell.errors
    ]
