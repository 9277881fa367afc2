"""Small constructors for frozen objects, so tests read as the rule or behaviour they check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matrix.build.messages import BuildRequest
from matrix.facts.node_findings import FP32_GEMM
from matrix.facts.types import FP32, ModelFacts, NodeFinding, ParserCheck, TensorInfo
from matrix.manifest.types import (
    CURRENT,
    DEFAULT,
    BuilderOptions,
    Exclusion,
    InputShape,
    Manifest,
    Model,
    Profile,
    Target,
)
from matrix.plan.capabilities import parse_cc


def target(name: str, *ccs: str, current: bool = False) -> Target:
    if name == DEFAULT:
        return Target(DEFAULT)
    if name == CURRENT:
        return Target(CURRENT, current=True)
    parsed = tuple(sorted({parse_cc(c) for c in (ccs or (name,))}))
    return Target(name if ccs else parsed[0].name, parsed, current)


def facts(
    *dtypes: str,
    fp32_gemm: bool = False,
    dynamic: bool = False,
    name: str = "m",
    nodes: tuple[NodeFinding, ...] = (),
    parser: ParserCheck | None = None,
) -> ModelFacts:
    if fp32_gemm:
        nodes = (NodeFinding(FP32_GEMM, "mm", "MatMul", "FP32"), *nodes)
    shape: tuple[int | str | None, ...] = ("batch", 8) if dynamic else (1, 8)
    return ModelFacts(
        path=f"/models/{name}.onnx",
        dtypes=frozenset(dtypes or (FP32,)),
        nodes=nodes,
        inputs=(TensorInfo("x", FP32, shape),),
        outputs=(TensorInfo("y", FP32, (1, 8)),),
        digest="sha256:" + "0" * 64,
        graph_digest="sha256:" + "1" * 64,
        weights_digest="sha256:" + "2" * 64,
        size=1000,
        parser=parser,
    )


def model(
    name: str = "m",
    targets: tuple[Target, ...] = (Target(DEFAULT),),
    weightless: tuple[bool, ...] = (False,),
    profiles: tuple[Profile, ...] = (),
) -> Model:
    return Model(
        name=name,
        onnx=Path(f"/models/{name}.onnx"),
        onnx_rel=f"{name}.onnx",
        targets=targets,
        weightless=weightless,
        profiles=profiles,
    )


def profile(**shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]) -> Profile:
    return Profile(tuple(InputShape(k, *v) for k, v in shapes.items()))


def manifest(*models: Model, exclude: tuple[Exclusion, ...] = ()) -> Manifest:
    return Manifest(
        path=Path("/repo/rtx-matrix.yaml"),
        output=Path("/repo/engines"),
        output_rel="engines",
        targets=(),
        models=models,
        exclude=exclude,
    )


def build_request(tmp_path: Path, onnx: Path, name: str = "cell", **fields: Any) -> BuildRequest:
    """A CPU build request for `onnx` with the engine and log under `tmp_path/engines`."""
    values: dict[str, Any] = {
        "cell_id": name,
        "onnx": str(onnx),
        "ccs": (),
        "use_gpu": False,
        "weightless": False,
        "options": BuilderOptions(),
        "profiles": (),
        "engine_path": str(tmp_path / "engines" / f"{name}.engine"),
        "log_path": str(tmp_path / "engines" / "logs" / f"{name}.log"),
    }
    values.update(fields)
    return BuildRequest(**values)
