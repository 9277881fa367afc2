"""What crosses the process boundary to a build worker and back: small, picklable, frozen."""

from __future__ import annotations

from dataclasses import dataclass

from matrix.lockfile.types import TensorSpec
from matrix.manifest.types import BuilderOptions, Profile


@dataclass(frozen=True)
class BuildRequest:
    cell_id: str
    onnx: str
    """Absolute path of the ONNX model."""
    ccs: tuple[str, ...]
    """Canonical CC names (`sm86`); () means the library default. Resolved: never `current`."""
    use_gpu: bool
    """Build for the GPU in this machine (ComputeCapability.CURRENT)."""
    weightless: bool
    options: BuilderOptions
    profiles: tuple[Profile, ...]
    engine_path: str
    """Absolute final path; the builder writes a temporary sibling and renames it."""
    log_path: str
    expected_mask: int | None = None
    """Engine-header CC mask the build must produce; None skips the check (GPU builds)."""
    device: int = 0
    """CUDA device for GPU builds."""


@dataclass(frozen=True)
class BuildResult:
    cell_id: str
    ok: bool
    seconds: float
    sha256: str | None = None
    size: int | None = None
    header_mask: int | None = None
    error: str | None = None
    """One line (`one_line`) for the summary; the whole builder log is in the request's
    log_path."""
    io: tuple[TensorSpec, ...] = ()
    weights_bytes: int | None = None
    stripped_weights_bytes: int | None = None


def one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, as one space."""
    return " ".join(text.split())


@dataclass(frozen=True)
class ProgressEvent:
    """Sent by a worker while it builds; `phase` is the builder's IProgressMonitor phase."""

    cell_id: str
    kind: str
    """`start`, `phase`, `step`, `end`."""
    phase: str = ""
    step: int = 0
    steps: int = 0
    pid: int = 0
