"""Which engine of a bundle a GPU loads, one per family. Pure: reads nothing but its inputs.

TensorRT-RTX engines built for chosen compute capabilities "can only be run on specified
target devices", so an application ships several and picks one per GPU. The rule, per
family (models that serve one purpose, in manifest order of preference):

1. the first model that has an engine running on this CC;
2. among that model's engines: one built for exactly this CC, then a target set containing
   it, then `default` (the library's portable build);
3. of two engines alike in that, a full one over a weightless one (which needs a refit on
   first launch); then the one the manifest lists first.

A GPU TensorRT-RTX does not support (9.0, 10.x, 11.x, 8.7, below 7.5) is refused with the
line `build` uses for it (`matrix.gpu.cc_refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType

from matrix.errors import GpuError, InputError
from matrix.gpu import Gpu, cc_refusal, is_supported
from matrix.plan.capabilities import CC, KNOWN, NEWER, looks_like_cc, parse_cc
from matrix.runtime.bundle import Bundle, BundleEngine, read_bundle

_NEWEST_KNOWN = max(KNOWN)


class Fit(IntEnum):
    """How closely an engine's targets match the GPU; lower is better."""

    EXACT = 0
    SET = 1
    DEFAULT = 2


@dataclass(frozen=True)
class Choice:
    family: str
    engine: BundleEngine
    fit: Fit
    passed_over: tuple[str, ...] = ()
    """Models the family prefers that have no engine running on this CC."""

    @property
    def why(self) -> str:
        cc = self.engine.built_for
        if self.fit is Fit.EXACT:
            return f"built for {cc[0]}"
        if self.fit is Fit.SET:
            return f"built for {' '.join(cc)}"
        return "default build"


@dataclass(frozen=True)
class Selection:
    cc: CC
    gpu: Gpu | None
    """The GPU selected for, when the caller named one rather than a CC."""
    chosen: Mapping[str, Choice]
    """Family -> its engine, in the bundle's family order."""
    missing: Mapping[str, str]
    """Family -> why none of its engines runs on this CC."""

    @property
    def subject(self) -> str:
        return self.gpu.label if self.gpu is not None else f"CC {self.cc.dotted}"


def select(bundle: Bundle | Path | str, cc: CC | Gpu | str | float) -> Selection:
    """The engine each family of `bundle` loads on a GPU of compute capability `cc`.

    `cc`: a CC, a spelling of one (`"8.6"`, `"sm86"`, 86), or a `matrix.gpu.Gpu` (its CC;
    refusals then name the GPU). GpuError (exit 3) for a GPU TensorRT-RTX does not support;
    InputError for something that is not a CC.
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    gpu = cc if isinstance(cc, Gpu) else None
    wanted = _as_cc(cc)
    if not is_supported(wanted):
        raise GpuError(gpu.refusal if gpu and gpu.refusal else cc_refusal(f"CC {wanted.dotted}"))
    chosen: dict[str, Choice] = {}
    missing: dict[str, str] = {}
    for family in bundle.families:
        choice = choose(bundle, family.name, family.models, wanted)
        if choice is None:
            missing[family.name] = _none_runs(bundle, family.models, wanted)
        else:
            chosen[family.name] = choice
    return Selection(wanted, gpu, MappingProxyType(chosen), MappingProxyType(missing))


def choose(
    bundle: Bundle, family: str, models: tuple[str, ...], cc: CC
) -> Choice | None:
    """The family's engine for `cc`: the first model with a runnable engine, its best fit."""
    for preferred, model in enumerate(models):
        ranked = sorted(
            (
                (fit, engine.weightless, position, engine)
                for position, engine in enumerate(bundle.engines)
                if engine.model == model and (fit := fit_of(engine, cc)) is not None
            ),
            key=lambda item: item[:3],
        )
        if ranked:
            fit, _, _, engine = ranked[0]
            return Choice(family, engine, fit, models[:preferred])
    return None


def fit_of(engine: BundleEngine, cc: CC) -> Fit | None:
    """How `engine` fits a GPU of `cc`; None when it does not run there."""
    if not runs_on(engine, cc):
        return None
    if engine.built_for == (cc.name,):
        return Fit.EXACT
    if engine.built_for:
        return Fit.SET
    return Fit.DEFAULT


def runs_on(engine: BundleEngine, cc: CC) -> bool:
    if cc.name in engine.runs_on:
        return True
    return NEWER in engine.runs_on and cc > _NEWEST_KNOWN


def _none_runs(bundle: Bundle, models: tuple[str, ...], cc: CC) -> str:
    found = {on for m in models for e in bundle.engines_of(m) for on in e.runs_on}
    where = sorted(found, key=_cc_order)
    runs = f" (its engines run on {' '.join(where)})" if where else " (it has no engines)"
    return f"no engine runs on CC {cc.dotted}{runs}"


def _cc_order(name: str) -> tuple[int, CC, str]:
    """CCs in numeric order (sm80 before sm120), then `newer`, then anything unexpected."""
    if looks_like_cc(name):
        return 0, parse_cc(name), name
    return (1 if name == NEWER else 2), CC(0, 0), name


def _as_cc(value: CC | Gpu | str | float) -> CC:
    if isinstance(value, CC):
        return value
    if isinstance(value, Gpu):
        return value.cc
    try:
        return parse_cc(value)
    except ValueError as error:
        raise InputError(str(error)) from None
