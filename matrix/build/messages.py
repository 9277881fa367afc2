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
    expected_peak_bytes: int = 0
    """Memory the build is expected to need at its peak (`matrix.build.memory`); 0: unknown."""


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
    peak_rss_bytes: int | None = None
    """The worker's peak resident memory during this build alone; None when not measurable."""
    out_of_memory: bool = False
    """The kernel's out-of-memory killer ended the worker mid-build (`matrix.build.oom`)."""


def one_line(text: str) -> str:
    """`text` with every run of whitespace, newlines included, as one space."""
    return " ".join(text.split())


WRITING = "Writing engine"
"""The phase of `write` events."""


@dataclass(frozen=True)
class ProgressEvent:
    """Sent by a worker while it builds; `phase` is the builder's IProgressMonitor phase."""

    cell_id: str
    kind: str
    """`start`, `phase`, `step`, `write`, `end`; and `retry` from the executor, whose `phase`
    says why the cell starts again."""
    phase: str = ""
    step: int = 0
    """Steps done; for `write`, bytes of the engine written so far."""
    steps: int = 0
    """The phase's step count; for `write`, the engine's size."""
    pid: int = 0
