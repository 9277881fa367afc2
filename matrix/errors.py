"""One error hierarchy; every class carries the exit code the CLI returns for it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, located as precisely as we can."""

    file: str
    message: str
    line: int | None = None
    column: int | None = None
    json_path: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.json_path:
            return f"{where}: {self.json_path}: {self.message}"
        return f"{where}: {self.message}"


class MatrixError(Exception):
    """Base of every error the CLI reports as a clean message instead of a traceback."""

    exit_code = 1


class InputError(MatrixError):
    """The user's input (manifest, ONNX model, lockfile, flags) is wrong. Nothing was written."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", message=problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p).lstrip(": ") for p in self.problems))


class UsageError(MatrixError):
    """Command-line arguments that do not make sense together."""

    exit_code = 2


class PlanRejected(MatrixError):
    """The plan has cells that break a rule; listed by the reporter."""

    exit_code = 1


class Stale(MatrixError):
    """`--check`: something is out of date."""

    exit_code = 1


class CacheError(MatrixError):
    """A `cache` command cannot use its engine cache (none set, unreachable, read-only)."""

    exit_code = 1


class OutputBusy(MatrixError):
    """Another rtx-matrix process holds an output: a build's folder (its mutex, not the
    lockfile), or an engine `prepare` is refitting into the cache."""

    exit_code = 3


class GpuError(MatrixError):
    """A GPU is needed and there is none TensorRT-RTX supports."""

    exit_code = 3


class Interrupted(MatrixError):
    """Ctrl-C: the lock holds every finished cell."""

    exit_code = 130
