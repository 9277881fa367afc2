"""The expanded build matrix: frozen cells with a verdict each (made by `matrix.plan.planner`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from matrix.facts.types import ModelFacts
from matrix.manifest.types import Manifest, Model, Target


class TextEnum(str, Enum):
    """Prints as its value, in messages and JSON alike (enum.StrEnum from Python 3.11 on)."""

    def __str__(self) -> str:
        return str.__str__(self)


class Verdict(TextEnum):
    BUILD = "build"
    NEEDS_GPU = "needs-gpu"
    REJECTED = "rejected"
    EXCLUDED = "excluded"


class Severity(TextEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Reason:
    rule: str
    """Stable id of the rule in `matrix.plan.rules`, e.g. `dtype-needs-cc`."""
    message: str
    severity: Severity


@dataclass(frozen=True)
class Cell:
    id: str
    """`<model>@<target>`, plus `+weightless` for weightless cells."""
    model: Model
    target: Target
    weightless: bool
    verdict: Verdict
    reasons: tuple[Reason, ...]
    runs_on: tuple[str, ...]
    """CC names the engine will run on (`sm89`, ..., `newer`); `current` until resolved."""
    needs_gpu: bool

    @property
    def buildable(self) -> bool:
        """An executor may build it: `build`, or `needs-gpu` where a GPU is present."""
        return self.verdict in (Verdict.BUILD, Verdict.NEEDS_GPU)

    @property
    def errors(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.severity is Severity.WARNING)


def cell_id(model: str, target: str, weightless: bool) -> str:
    return f"{model}@{target}" + ("+weightless" if weightless else "")


@dataclass(frozen=True)
class Plan:
    manifest: Manifest
    cells: tuple[Cell, ...]
    facts: Mapping[str, ModelFacts]
    """Keyed by model name."""
    tensorrt_rtx: str
    """Version the rules table is for."""

    def with_verdict(self, *verdicts: Verdict) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.verdict in verdicts)

    @property
    def rejected(self) -> tuple[Cell, ...]:
        return self.with_verdict(Verdict.REJECTED)

    @property
    def buildable(self) -> tuple[Cell, ...]:
        """Cells an executor may build (`Cell.buildable`)."""
        return tuple(c for c in self.cells if c.buildable)
