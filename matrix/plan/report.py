"""Render a Plan for people (a table) and for programs (JSON); Markdown is in `markdown`."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, TextIO

from matrix.plan.types import Cell, Plan, Severity, Verdict

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
    summary: dict[str, Any] = {v.value: len(plan.with_verdict(v)) for v in Verdict}
    summary["rejected_by_rule"] = rejected_by_rule(plan)
    return json.dumps(
        {
            "tensorrt_rtx": plan.tensorrt_rtx,
            "cells": [cell_json(c) for c in plan.cells],
            "summary": summary,
        },
        indent=2,
    )


def reasons_text(cell: Cell) -> str:
    shown = [r for r in cell.reasons if r.severity is not Severity.INFO] or list(cell.reasons)
    return "\n".join(f"[{r.rule}] {r.message}" for r in shown)


RICH_TABLE_MAX_ROWS = 300
"""rich measures every cell of a table; past this many rows plain columns are 10x faster."""

HEADERS = ("cell", "verdict", "runs on", "why")


def plan_rows(plan: Plan) -> list[tuple[str, str, str, str]]:
    return [
        (cell.id, cell.verdict.value, " ".join(cell.runs_on), reasons_text(cell))
        for cell in plan.cells
    ]


def print_plan_table(plan: Plan, out: TextIO) -> None:
    rows = plan_rows(plan)
    if out.isatty() and len(rows) <= RICH_TABLE_MAX_ROWS:
        print_rich_table(plan, rows, out)
    else:
        print_plain_table(rows, out)
    print(summary_line(plan), file=out)


def print_plain_table(rows: list[tuple[str, str, str, str]], out: TextIO) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:3]) + "  {}"
    lines = [fmt.format(*HEADERS)]
    for row in rows:
        why = row[3].splitlines() or [""]
        lines.append(fmt.format(*row[:3], why[0]).rstrip())
        lines.extend(fmt.format("", "", "", extra).rstrip() for extra in why[1:])
    out.write("\n".join(lines) + "\n")


def print_rich_table(plan: Plan, rows: list[tuple[str, str, str, str]], out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{plan.manifest.path.name}: {len(rows)} cells", title_justify="left")
    for header in HEADERS:
        table.add_column(header, no_wrap=header in ("cell", "verdict"))
    for cell, (ident, verdict, runs_on, why) in zip(plan.cells, rows, strict=True):
        style = VERDICT_STYLE[cell.verdict]
        table.add_row(escape(ident), f"[{style}]{verdict}[/]", runs_on, escape(why))
    Console(file=out).print(table)


def summary_line(plan: Plan) -> str:
    """`10 build, 3 needs-gpu, 4 rejected (3 turing-fp32-gemm, 1 dtype-needs-cc), 1 excluded`."""
    parts = []
    for verdict in Verdict:
        count = len(plan.with_verdict(verdict))
        if not count:
            continue
        by_rule = rejected_by_rule(plan) if verdict is Verdict.REJECTED else {}
        rules = ", ".join(f"{n} {rule}" for rule, n in by_rule.items())
        parts.append(f"{count} {verdict}" + (f" ({rules})" if rules else ""))
    return ", ".join(parts) or "no cells"


def rejected_by_rule(plan: Plan) -> dict[str, int]:
    """Rejected cells per rule, most first (then by name). A cell that breaks two rules
    counts under each, so the counts may add up to more than the rejected cells."""
    counts = Counter(rule for cell in plan.rejected for rule in {r.rule for r in cell.errors})
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def rejection_lines(plan: Plan) -> list[str]:
    return [
        f"{cell.id}: [{reason.rule}] {reason.message}"
        for cell in plan.rejected
        for reason in cell.errors
    ]
