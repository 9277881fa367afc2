"""The manifest as frozen, typed objects. Raw dicts stop at `matrix.manifest.loader`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from matrix.plan.capabilities import CC

DEFAULT = "default"
CURRENT = "current"
TILING_LEVELS = ("none", "fast", "moderate", "full")
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """What one entry of a model's `targets` asks for.

    `default`: no CC set (the library's portable default). `current`: the building GPU.
    Otherwise the CCs of a built-in (`sm86`) or a named set (`ampere-plus`). A named set may
    list `current` next to CCs; the planner rejects that, the loader keeps it so the user
    learns which rule it breaks.
    """

    name: str
    ccs: tuple[CC, ...] = ()
    current: bool = False

    @property
    def is_default(self) -> bool:
        return not self.ccs and not self.current

    @property
    def spec(self) -> tuple[str, ...]:
        """The targets as asked, in canonical spelling: () for default, ("current",), ("sm86",)."""
        return (CURRENT,) * self.current + tuple(cc.name for cc in self.ccs)


@dataclass(frozen=True)
class BuilderOptions:
    """Only options TensorRT-RTX honours. None means "library default"."""

    optimization_level: int | None = None
    tiling_optimization_level: str | None = None
    max_aux_streams: int | None = None
    workspace_bytes: int | None = None

    def merged(self, override: BuilderOptions) -> BuilderOptions:
        """`override`'s set fields win over ours."""
        return BuilderOptions(
            optimization_level=_first(override.optimization_level, self.optimization_level),
            tiling_optimization_level=_first(
                override.tiling_optimization_level, self.tiling_optimization_level
            ),
            max_aux_streams=_first(override.max_aux_streams, self.max_aux_streams),
            workspace_bytes=_first(override.workspace_bytes, self.workspace_bytes),
        )

    def as_dict(self, include_unset: bool = False) -> dict[str, int | str | None]:
        values: dict[str, int | str | None] = {
            "optimization_level": self.optimization_level,
            "tiling_optimization_level": self.tiling_optimization_level,
            "max_aux_streams": self.max_aux_streams,
            "workspace_bytes": self.workspace_bytes,
        }
        return values if include_unset else {k: v for k, v in values.items() if v is not None}


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


@dataclass(frozen=True)
class ValueRange:
    """min/opt/max of the values a shape input holds (`IOptimizationProfile.set_shape_input`):
    one integer per element of the input, min <= opt <= max element by element."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class InputShape:
    """One network input inside an optimization profile: min/opt/max of its dims, of the
    values it holds when it is a shape input, or both. Dims are () when not given."""

    input: str
    min: tuple[int, ...] = ()
    opt: tuple[int, ...] = ()
    max: tuple[int, ...] = ()
    values: ValueRange | None = None

    @property
    def has_dims(self) -> bool:
        return bool(self.min)

    def as_dict(self) -> dict[str, Any]:
        # Dims-only entries keep the exact form they always had: fingerprints of manifests
        # without values must not move.
        entry: dict[str, Any] = {}
        if self.has_dims:
            entry.update(min=list(self.min), opt=list(self.opt), max=list(self.max))
        if self.values is not None:
            entry["values"] = self.values.as_dict()
        return entry


@dataclass(frozen=True)
class Profile:
    shapes: tuple[InputShape, ...]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s.input: s.as_dict() for s in self.shapes}


@dataclass(frozen=True)
class Model:
    name: str
    onnx: Path
    """Absolute path of the ONNX file."""
    onnx_rel: str
    """The path as written in the manifest (relative to it), for messages and the lock."""
    targets: tuple[Target, ...]
    weightless: tuple[bool, ...] = (False,)
    profiles: tuple[Profile, ...] = ()
    builder: BuilderOptions = BuilderOptions()
    index: int = 0
    """Position in `models:`, so later stages can point at `$.models[i]`."""
    family: str = ""
    """Models of one family are variants of one network; manifest order is the order of
    preference (`matrix.runtime.select`). The loader sets it (default: the name); it decides
    no engine bytes, so no fingerprint includes it."""


@dataclass(frozen=True)
class Exclusion:
    """Matches every cell whose set fields all match; an unset field matches anything."""

    model: str | None = None
    target: str | None = None
    weightless: bool | None = None

    def matches(self, model: str, target: str, weightless: bool) -> bool:
        return (
            (self.model is None or self.model == model)
            and (self.target is None or self.target == target)
            and (self.weightless is None or self.weightless == weightless)
        )


@dataclass(frozen=True)
class CacheSpec:
    """The shared engine cache a run uses (`cache:` in the manifest, or `--cache URL`):
    see `matrix.engine_cache`. Never part of a fingerprint: where an engine comes from does
    not change what it is."""

    url: str
    """An fsspec URL (`s3://bucket/prefix`, `gs://...`, `https://...`) or an absolute folder
    path; a relative folder in the manifest is resolved against the manifest's folder."""
    push: bool = True
    """Upload the engines this machine builds."""


Location = tuple[int, int]
"""1-based (line, column) in the manifest."""


def locate(locations: Mapping[str, Location], json_path: str) -> Location | None:
    """Where `json_path` stands in the file, or its nearest located ancestor; None when not
    even the document (`$`) is located."""
    path = json_path
    while path not in locations:
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return locations.get("$")
        path = path[:cut]
    return locations[path]


@dataclass(frozen=True)
class Manifest:
    path: Path
    """Absolute path of the manifest file."""
    output: Path
    """Absolute engine folder, always inside the manifest's folder."""
    output_rel: str
    targets: tuple[Target, ...]
    """The named sets of `targets:`."""
    models: tuple[Model, ...]
    exclude: tuple[Exclusion, ...] = ()
    builder: BuilderOptions = BuilderOptions()
    version: int = 1
    cache: CacheSpec | None = None
    locations: Mapping[str, Location] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False, repr=False
    )
    """JSON path (`$.models[0].targets[2]`) to where it stands in the YAML."""

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        return default_lock_path(self.path)

    def locate(self, json_path: str) -> Location | None:
        """Where `json_path` stands in the file, or its nearest located ancestor."""
        return locate(self.locations, json_path)


def default_lock_path(manifest_path: Path) -> Path:
    """`<manifest stem>.lock` beside the manifest."""
    return manifest_path.with_suffix(".lock")
