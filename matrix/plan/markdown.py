"""The plan as a Markdown grid for a pull-request comment or `$GITHUB_STEP_SUMMARY`.

Models are rows and target entries columns; each grid cell holds the plan's cells for that
model and target (a weightless one marked so). A renderer only: it reads a finished Plan.
"""

from __future__ import annotations

from matrix.manifest.loader import display_path
from matrix.plan.report import summary_line
from matrix.plan.types import Cell, Plan, Reason, Verdict

ICONS = {
    Verdict.BUILD: "✅",
    Verdict.NEEDS_GPU: "🟡",
    Verdict.REJECTED: "❌",
    Verdict.EXCLUDED: "➖",
}
LEGEND = (
    "✅ build · 🟡 needs-gpu (built only where a TensorRT-RTX GPU is) · ❌ rejected (rule) · "
    "➖ excluded · ⚠️ warning. After `·`: the GPUs the engine runs on "
    "(`newer`: GPUs newer than the rules table)."
)


def plan_markdown(plan: Plan) -> str:
    """The whole report, ending in a newline."""
    targets = _target_columns(plan)
    grid: dict[tuple[str, str], list[Cell]] = {}
    for cell in plan.cells:
        grid.setdefault((cell.model.name, cell.target.name), []).append(cell)
    lines = [
        f"### rtx-matrix plan: `{display_path(plan.manifest.path)}` "
        f"(TensorRT-RTX {plan.tensorrt_rtx})",
        "",
        "| model | " + " | ".join(targets) + " |",
        "| --- |" + " --- |" * len(targets),
    ]
    for model in plan.manifest.models:
        row = ["<br>".join(_cell_text(c) for c in grid.get((model.name, t), ())) for t in targets]
        lines.append(f"| {model.name} | " + " | ".join(row) + " |")
    lines += ["", LEGEND, "", f"**{summary_line(plan)}**"]
    lines += _details("rejected", [(c, r) for c in plan.rejected for r in c.errors])
    warnings = [(c, r) for c in plan.cells for r in c.warnings]
    lines += _details("warning", warnings)
    return "\n".join(lines) + "\n"


def _target_columns(plan: Plan) -> list[str]:
    """Target entries in the order the manifest first names them."""
    return list(dict.fromkeys(t.name for m in plan.manifest.models for t in m.targets))


def _cell_text(cell: Cell) -> str:
    kind = "weightless " if cell.weightless else ""
    text = f"{ICONS[cell.verdict]} {kind}{cell.verdict}"
    if cell.verdict is Verdict.REJECTED:
        return f"{text}: " + ", ".join(f"`{rule}`" for rule in _rules(cell.errors))
    if cell.verdict is Verdict.EXCLUDED:
        return text
    warned = "".join(f" ⚠️ `{rule}`" for rule in _rules(cell.warnings))
    return f"{text}{warned} · {' '.join(cell.runs_on)}"


def _rules(reasons: tuple[Reason, ...]) -> list[str]:
    return list(dict.fromkeys(r.rule for r in reasons))


def _details(what: str, found: list[tuple[Cell, Reason]]) -> list[str]:
    """A folded list of each cell's reasons; nothing when there are none."""
    if not found:
        return []
    cells = len({cell.id for cell, _ in found})
    if what == "rejected":
        title = f"{cells} rejected cell{'s' * (cells != 1)}"
    else:
        title = f"{len(found)} {what}{'s' * (len(found) != 1)}"
    return [
        "",
        f"<details><summary>{title}</summary>",
        "",
        *(f"- `{cell.id}` `{reason.rule}`: {_inline(reason.message)}" for cell, reason in found),
        "",
        "</details>",
    ]


def _inline(text: str) -> str:
    return " ".join(text.split())
