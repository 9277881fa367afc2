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
class ModelFacts:
    path: str
    """Absolute path of the .onnx file."""
    dtypes: frozenset[str]
    """Every element type the graph uses, canonical names (fp32, fp16, bf16, fp8, fp4, ...)."""
    fp32_gemm: bool
    """A MatMul/Gemm that runs in float32 (including one fed by a DequantizeLinear to float)."""
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

    @property
    def dynamic_inputs(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.inputs if t.is_dynamic)
