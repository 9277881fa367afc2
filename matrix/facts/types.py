"""What the planner needs to know about one ONNX model (produced by `matrix.facts.onnx_inspect`)."""

from __future__ import annotations

from dataclasses import dataclass

# Canonical dtype names used by the rules table. Every ONNX TensorProto element type maps to
# one of these in `matrix.facts.onnx_inspect`.
FP32 = "fp32"
FP16 = "fp16"
BF16 = "bf16"
FP8 = "fp8"
FP4 = "fp4"
INT4 = "int4"
INT8 = "int8"
INTEGER_DTYPES = frozenset({"int32", "int64"})
"""The element types a shape input can have."""
FP64 = "fp64"
# Element types TensorRT-RTX 1.7 cannot import at all (see docs/tensorrt-rtx.md): each keeps
# its own name, so a rule can tell FLOAT8E5M2 from the FP8 (E4M3FN) the library builds.
FP8_E5M2 = "fp8e5m2"
FP8_E4M3FNUZ = "fp8e4m3fnuz"
FP8_E5M2FNUZ = "fp8e5m2fnuz"
FP8_E8M0 = "fp8e8m0"
UINT4 = "uint4"
INT2 = "int2"
UINT2 = "uint2"
FP6 = "fp6"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | str | None, ...]
    """Static dims as ints; dynamic dims as their symbolic name, or None when unnamed."""

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) or d < 0 for d in self.shape)


@dataclass(frozen=True)
class NodeFinding:
    """A node whose form a rule may refuse (`kind`), found by reading the graph."""

    kind: str
    """One of the `matrix.facts.onnx_inspect` kinds: `fp32-gemm`, `fp32-conv3d`, ..."""
    node: str
    """The node's name, or its first output's when it has none."""
    op: str
    detail: str = ""
    """What the rule's message needs besides the node, e.g. the tensor and its dtype."""


@dataclass(frozen=True)
class ParserError:
    """One error of the TensorRT-RTX ONNX parser, as it reported it."""

    node: str
    op: str
    message: str


@dataclass(frozen=True)
class ParserCheck:
    """What the TensorRT-RTX ONNX parser said of a model (parsed only, never built)."""

    tensorrt_rtx: str
    """The library version that parsed it: a check by another version is stale."""
    errors: tuple[ParserError, ...] = ()
    """Empty when the parser imports the model."""


@dataclass(frozen=True)
class ModelFacts:
    path: str
    """Absolute path of the .onnx file."""
    dtypes: frozenset[str]
    """Every element type the graph uses, canonical names (fp32, fp16, bf16, fp8, fp4, ...)."""
    nodes: tuple[NodeFinding, ...]
    """Nodes whose form some rule may refuse (FP32 GEMMs, quantized tensors out of place...)."""
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    digest: str
    """sha256 over the model file and every external-data file it references."""
    graph_digest: str
    """sha256 of the graph with weight payloads left out: stable when only weights change."""
    weights_digest: str
    """sha256 over the weight payloads (inline and external)."""
    size: int
    """Bytes of the model file plus its external data."""
    external_files: tuple[str, ...] = ()
    """External-data files, relative to the model's folder."""
    opset: int = 0
    shape_inputs: tuple[str, ...] = ()
    """Inputs whose values (not dims) are shapes: a profile must give their values."""
    parser: ParserCheck | None = None
    """The parser's verdict for the installed library; None until checked (or not checkable)."""

    def found(self, kind: str) -> tuple[NodeFinding, ...]:
        return tuple(n for n in self.nodes if n.kind == kind)

    @property
    def dynamic_inputs(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.inputs if t.is_dynamic)
