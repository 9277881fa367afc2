"""Nodes whose form TensorRT-RTX may refuse, read from the graph alone (no weight values).

Each kind names a graph pattern; the rules table says on which CCs the library refuses it.
Every pattern, and every exception to it, was measured with the real library: see
docs/tensorrt-rtx.md ("What the builder refuses beyond dtypes"). Where a pattern was not
measured it is left out, so the planner never rejects a cell the library would build.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from matrix.facts.types import NodeFinding

FP32_GEMM = "fp32-gemm"
"""A matrix product computed in FP32 (DOUBLE runs as FP32): Turing has no FP32 GEMM."""
FP32_CONV3D = "fp32-conv3d"
FP32_DECONV3D = "fp32-deconv3d"
HW_DTYPE_OP = "hw-dtype-op"
"""An FP8/FP4/INT4 tensor produced or consumed by an op that cannot hold it."""
QUANTIZED_CONSTANT = "quantized-constant"
"""An INT8/FP8/INT4/FP4 constant used by something other than a Q/DQ node."""
QUANTIZED_SCALAR = "quantized-scalar"
"""An INT8/FP8/INT4/FP4 constant of rank 0 dequantized (onnxruntime quantizes scalars)."""

# ONNX TensorProto element types (numbers fixed by the ONNX standard).
FLOAT, UINT8, INT8, FLOAT16, DOUBLE = 1, 2, 3, 10, 11
FLOAT8E4M3FN, INT4, FLOAT4E2M1 = 17, 22, 23

_FP32_LIKE = {FLOAT: "FP32", DOUBLE: "DOUBLE"}
_HW = {FLOAT8E4M3FN: "FP8", INT4: "INT4", FLOAT4E2M1: "FP4"}
_QUANTIZED = {INT8: "INT8", **_HW}
_GEMM_OPS = frozenset({"MatMul", "Gemm"})
_RNN_OPS = frozenset({"LSTM", "GRU", "RNN"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Measured: the library wants Q/DQ, Concat, Reshape/Transpose/Flatten (shuffles), Identity
# or Shape/Size next to an FP8/FP4/INT4 tensor. These ops were seen to be refused there;
# others are left to the parser check rather than guessed.
_HW_REFUSED_CONSUMERS = frozenset(
    {"Cast", "CastLike", "Pad", "Squeeze", "Unsqueeze", "Gather", "Slice", "Split", "Relu"}
)
_HW_REFUSED_PRODUCERS = frozenset({"Cast", "CastLike", "ConstantOfShape"})


@dataclass
class Graph:
    """The main graph and its subgraphs flattened into lookups (ONNX names are unique)."""

    nodes: list[Any]
    types: dict[str, int]
    ranks: dict[str, int]
    constants: set[str]
    outputs: set[str]
    producers: dict[str, Any] = field(default_factory=dict)
    consumers: dict[str, list[Any]] = field(default_factory=dict)
    shape_values: set[str] = field(default_factory=set)
    """Tensors computed from Shape/Size only: the library works them out at build time."""

    def __post_init__(self) -> None:
        for node in self.nodes:
            for out in node.output:
                if out:
                    self.producers[out] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        # Nodes come in topological order (an ONNX rule), so one pass finds them all.
        for node in self.nodes:
            inputs = [n for n in node.input if n]
            if node.op_type in ("Shape", "Size") or (
                inputs
                and any(n in self.shape_values for n in inputs)
                and all(n in self.shape_values or n in self.constants for n in inputs)
            ):
                self.shape_values.update(o for o in node.output if o)

    def type_of(self, name: str) -> int:
        if name in self.types:
            return self.types[name]
        node = self.producers.get(name)
        if node is None:
            return 0
        if node.op_type == "Cast":
            return _attribute(node, "to", 0)
        if node.op_type == "DequantizeLinear":
            # Without inference: DQ yields its `output_dtype`, else its scale's type.
            return _attribute(node, "output_dtype", 0) or (
                self.types.get(node.input[1], 0) if len(node.input) > 1 else 0
            )
        return 0


def node_findings(graph: Graph) -> tuple[NodeFinding, ...]:
    found = [
        *_fp32_gemms(graph),
        *_fp32_conv3ds(graph),
        *_hw_dtype_ops(graph),
        *_quantized_constants(graph),
    ]
    return tuple(dict.fromkeys(found))


def _attribute(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _name(node: Any) -> str:
    return str(node.name or next((o for o in node.output if o), node.op_type))


# --- Turing: FP32 GEMMs and 3D convolutions -------------------------------------------------


def _gemm_operands(node: Any) -> list[str]:
    if node.op_type in _GEMM_OPS:
        return [n for n in node.input[:2] if n]
    if node.op_type == "Einsum":
        operands = [n for n in node.input if n]
        # Measured: every Einsum of two or more operands becomes a GEMM (even an
        # elementwise "ij,ij->ij"); one operand (transpose, sum, trace) does not.
        return operands if len(operands) >= 2 else []
    if node.op_type in _RNN_OPS:
        return [n for n in node.input[:1] if n]
    return []


def _fp32_gemms(graph: Graph) -> Iterator[NodeFinding]:
    for node in graph.nodes:
        operands = _gemm_operands(node)
        dtypes = {_FP32_LIKE[t] for t in map(graph.type_of, operands) if t in _FP32_LIKE}
        if not dtypes:
            continue
        if any(n in graph.shape_values for n in operands):
            continue  # a shape computation, done at build time (measured to build on sm75)
        if _gemm_in_fp16_casts(graph, node):
            continue
        yield NodeFinding(FP32_GEMM, _name(node), node.op_type, "/".join(sorted(dtypes)))


def _gemm_in_fp16_casts(graph: Graph, node: Any) -> bool:
    """Measured: Cast(FP16->FP32) -> MatMul/Einsum/Gemm -> Cast(FP32->FP16) builds on sm75,
    the library runs the product in FP16. A bias, transB, another consumer or an op in between
    keeps it in FP32; an untried form (an RNN) is taken as FP32."""
    if node.op_type == "Gemm" and (
        len([n for n in node.input if n]) > 2 or _attribute(node, "transB", 0)
    ):
        return False
    return node.op_type in ("MatMul", "Einsum", "Gemm") and _in_fp16_casts(
        graph, node, [n for n in node.input if n]
    )


def _in_fp16_casts(graph: Graph, node: Any, operands: list[str]) -> bool:
    casts = [graph.producers.get(n) for n in operands if n not in graph.constants]
    if not casts or not all(
        c is not None and c.op_type == "Cast" and graph.type_of(c.input[0]) == FLOAT16
        for c in casts
    ):
        return False
    outputs = [o for o in node.output if o]
    users = [u for o in outputs for u in graph.consumers.get(o, [])]
    return (
        bool(users)
        and not any(o in graph.outputs for o in outputs)
        and all(u.op_type == "Cast" and _attribute(u, "to", 0) == FLOAT16 for u in users)
    )


def _fp32_conv3ds(graph: Graph) -> Iterator[NodeFinding]:
    for node in graph.nodes:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        dtype = graph.type_of(node.input[0])
        if dtype not in _FP32_LIKE or not _is_3d(graph, node):
            continue
        if _in_fp16_casts(graph, node, [node.input[0]]):
            continue  # measured: runs in FP16 like the GEMM above
        kind = FP32_CONV3D if node.op_type == "Conv" else FP32_DECONV3D
        yield NodeFinding(kind, _name(node), node.op_type, _FP32_LIKE[dtype])


def _is_3d(graph: Graph, node: Any) -> bool:
    for attribute in node.attribute:
        if attribute.name == "kernel_shape" and attribute.ints:
            return len(attribute.ints) == 3
    rank = graph.ranks.get(node.input[1]) or graph.ranks.get(node.input[0])
    return rank == 5


# --- FP8/FP4/INT4 tensors and quantized constants --------------------------------------------


def _hw_dtype_ops(graph: Graph) -> Iterator[NodeFinding]:
    tensors = {n: t for n, t in graph.types.items() if t in _HW}
    for node in graph.nodes:
        for out in node.output:
            if out and graph.type_of(out) in _HW:
                tensors[out] = graph.type_of(out)
    for tensor, dtype in tensors.items():
        label = f"{tensor!r} ({_HW[dtype]})"
        producer = graph.producers.get(tensor)
        if producer is not None and producer.op_type in _HW_REFUSED_PRODUCERS:
            yield NodeFinding(HW_DTYPE_OP, _name(producer), producer.op_type, f"makes {label}")
        for consumer in graph.consumers.get(tensor, []):
            if consumer.op_type in _HW_REFUSED_CONSUMERS:
                yield NodeFinding(HW_DTYPE_OP, _name(consumer), consumer.op_type, f"reads {label}")


def _quantized_constants(graph: Graph) -> Iterator[NodeFinding]:
    for tensor in sorted(graph.constants):
        dtype = graph.types.get(tensor, 0)
        if dtype not in _QUANTIZED:
            continue
        label = f"{tensor!r} ({_QUANTIZED[dtype]})"
        for consumer in graph.consumers.get(tensor, []):
            if consumer.op_type not in _QDQ:
                yield NodeFinding(QUANTIZED_CONSTANT, _name(consumer), consumer.op_type, label)
            elif (
                consumer.op_type == "DequantizeLinear"
                and consumer.input[0] == tensor
                and graph.ranks.get(tensor) == 0
            ):
                # Measured: a rank-0 one is refused like one not fed straight to its DQ (the
                # library reshapes it first); shape [1] builds. Zero points are not input 0.
                yield NodeFinding(QUANTIZED_SCALAR, _name(consumer), consumer.op_type, label)
