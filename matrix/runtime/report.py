"""Text and JSON for what `select`, `prepare` and `bundle verify` found (the CLI prints these)."""

from __future__ import annotations

from typing import Any

from matrix.lockfile.types import TensorSpec
from matrix.runtime.bundle import BundleEngine, Verified, engine_to_dict
from matrix.runtime.prepare import Prepared
from matrix.runtime.select import Selection


def human_bytes(size: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << power:
            return f"{size / (1 << power):.1f} {unit}"
    return f"{size} bytes"


def tensors(io: tuple[TensorSpec, ...]) -> str:
    """`x fp16[1,3,-1,-1] -> y fp16[1,8]`; empty when the lock did not record them."""

    def one(tensor: TensorSpec) -> str:
        return f"{tensor.name} {tensor.dtype}[{','.join(map(str, tensor.shape))}]"

    inputs = ", ".join(one(t) for t in io if t.mode == "input")
    outputs = ", ".join(one(t) for t in io if t.mode == "output")
    return f"{inputs} -> {outputs}" if io else ""


def engine_facts(engine: BundleEngine) -> str:
    """One line of what an engine is: how full, how big, its I/O."""
    parts = [f"{'weightless' if engine.weightless else 'full'}, {human_bytes(engine.size)}"]
    if engine.weightless and engine.refit is not None:
        source = "in the bundle" if engine.refit.included else "supplied by the application"
        refit = f"refit from {engine.refit.onnx.name} ({source})"
        if engine.stripped_weights_bytes is not None:
            refit += f", {human_bytes(engine.stripped_weights_bytes)} of weights"
        parts.append(refit)
    elif engine.weights_bytes is not None:
        parts.append(f"{human_bytes(engine.weights_bytes)} of weights")
    if engine.io:
        parts.append(tensors(engine.io))
    return "; ".join(parts)


def selection_lines(selection: Selection) -> list[str]:
    lines = [f"for {selection.subject}:"]
    for family, choice in selection.chosen.items():
        engine = choice.engine
        over = ""
        if choice.passed_over:
            over = f", preferred {', '.join(choice.passed_over)} has no engine for it"
        lines.append(f"  {family}: {engine.path} ({engine.cell}: {choice.why}{over})")
        lines.append(f"    {engine_facts(engine)}")
    for family, why in selection.missing.items():
        lines.append(f"  {family}: {why}")
    return lines


def selection_json(selection: Selection) -> dict[str, Any]:
    return {
        "cc": selection.cc.dotted,
        "gpu": selection.gpu.label if selection.gpu else None,
        "families": {
            family: {
                "fit": choice.fit.name.lower(),
                "passed_over": list(choice.passed_over),
                "engine": engine_to_dict(choice.engine),
            }
            for family, choice in selection.chosen.items()
        },
        "missing": dict(selection.missing),
    }


def verified_line(verified: Verified) -> str:
    engines = len(verified.bundle.engines)
    return (
        f"{verified.bundle.root}: {verified.files} files match bundle.json "
        f"({engines} engine{'s' * (engines != 1)}, {human_bytes(verified.bytes)})"
    )



def prepared_lines(prepared: Prepared) -> list[str]:
    lines = [f"for {prepared.selection.subject}:"]
    for family, ready in prepared.ready.items():
        if not ready.cached:
            how = "full engine from the bundle"
        elif ready.refitted:
            how = "weightless engine, refitted now and cached"
        else:
            how = "weightless engine, refitted earlier (cached)"
        lines.append(f"  {family}: {ready.path} ({ready.engine.cell}: {how})")
    for family, why in prepared.missing.items():
        lines.append(f"  {family}: {why}")
    return lines


def prepared_json(prepared: Prepared) -> dict[str, Any]:
    selection = prepared.selection
    return {
        "cc": selection.cc.dotted,
        "gpu": selection.gpu.label if selection.gpu else None,
        "families": {
            family: {
                "cell": ready.engine.cell,
                "path": str(ready.path),
                "cached": ready.cached,
                "refitted": ready.refitted,
            }
            for family, ready in prepared.ready.items()
        },
        "missing": dict(prepared.missing),
    }
