"""What the planner needs to know about an ONNX model, read without loading its weights.

The model is parsed with `load_external_data=False`: external weight files are only
streamed through sha256, so peak memory is bounded by the graph, not the weights.
`onnx` is imported inside `inspect_model` so that reading the facts cache stays cheap.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from matrix.facts import types as ft
from matrix.facts.node_findings import Graph, node_findings
from matrix.facts.types import ModelFacts, TensorInfo

CHUNK = 1 << 20
# Shape inputs (docs/profiles.md): the library reads these operands as shapes, and an integer
# network input that reaches one, directly or through the arithmetic below, is a shape input
# (`ITensor.is_shape_tensor`) that needs values in a profile. Measured against the parser
# by tests/facts/test_shape_inputs.py.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "ConstantOfShape": (0,),
    "Resize": (3,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2),
    "TopK": (1,),
    "Pad": (1, 3),
    "OneHot": (1,),
    "Split": (1,),
}
SHAPE_ARITHMETIC = frozenset({
    "Cast", "Concat", "Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
    "Identity", "Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Neg", "Abs", "Where",
    "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin",
})  # fmt: skip
_INTEGER_TYPES = frozenset({6, 7})  # TensorProto.INT32, INT64
_TYPE_ATTRIBUTES = frozenset({"to", "dtype", "output_dtype"})
_PAYLOAD_FIELDS = (
    "raw_data",
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
)
_CANONICAL = {
    "FLOAT": ft.FP32,
    "FLOAT16": ft.FP16,
    "BFLOAT16": ft.BF16,
    "DOUBLE": ft.FP64,
    "FLOAT8E4M3FN": ft.FP8,
    "FLOAT8E4M3FNUZ": ft.FP8_E4M3FNUZ,
    "FLOAT8E5M2": ft.FP8_E5M2,
    "FLOAT8E5M2FNUZ": ft.FP8_E5M2FNUZ,
    "FLOAT8E8M0": ft.FP8_E8M0,
    "FLOAT4E2M1": ft.FP4,
    "FLOAT6E2M3": ft.FP6,
    "FLOAT6E3M2": ft.FP6,
    "INT4": ft.INT4,
    "UINT4": ft.UINT4,
    "INT8": ft.INT8,
    "UINT8": ft.INT8,
}
# Bits per element, to know how many bytes an external tensor needs.
_BITS = {
    "FLOAT": 32, "UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "INT32": 32, "INT64": 64,
    "BOOL": 8, "FLOAT16": 16, "DOUBLE": 64, "UINT32": 32, "UINT64": 64, "COMPLEX64": 64,
    "COMPLEX128": 128, "BFLOAT16": 16, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8, "UINT4": 4, "INT4": 4,
    "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6,
}  # fmt: skip


class ModelFileError(Exception):
    """The ONNX file (or its external data) cannot be used; `reason` is one line."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class _External:
    tensor: str
    location: str
    offset: int
    length: int | None
    needed: int | None
    """Bytes the tensor's dims and type call for, when known."""


def inspect_model(path: Path, file_sha256: str | None = None) -> ModelFacts:
    """Facts of the model at `path`; raises ModelFileError when it cannot be used.

    `file_sha256`: the sha256 of the ONNX file's bytes, where the caller hashed them just
    before, unchanged since: a model without external data is not hashed a second time
    (2 GB of embedded weights take 1.3 s to hash on this project's machine)."""
    path = Path(os.path.abspath(path))
    data = _read_model_bytes(path)
    model = _parse(path, data)
    externals = _externals(model)
    files = _check_external_files(path, externals)
    digest, weights_digest, ext_size = _digests(model, data, path.parent, files, file_sha256)
    _drop_weight_payloads(model)
    inferred = _infer(model)
    types = _type_map(inferred)
    return ModelFacts(
        path=str(path),
        dtypes=frozenset(_dtypes(inferred, types)),
        nodes=node_findings(_graph(inferred, types)),
        inputs=_graph_inputs(model.graph),
        shape_inputs=_shape_inputs(model.graph),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        digest=digest,
        graph_digest=_graph_digest(model),
        weights_digest=weights_digest,
        size=len(data) + ext_size,
        external_files=files,
        opset=_default_opset(model),
    )


# --- reading and validating the file --------------------------------------------------------


def _read_model_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ModelFileError(path, "is a directory, not an ONNX file") from None
    except PermissionError:
        raise ModelFileError(path, "cannot read it: permission denied") from None
    except OSError as error:
        raise ModelFileError(path, f"cannot read it: {error.strerror or error}") from None


def _parse(path: Path, data: bytes) -> Any:
    import onnx

    if not data:
        raise ModelFileError(path, "empty file, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception:
        raise ModelFileError(
            path, "not a valid ONNX model (truncated, corrupt, or not ONNX at all)"
        ) from None
    # Protobuf parses some garbage (and files cut at a field boundary) without complaint:
    # a real model always has these three.
    if not model.ir_version or not model.HasField("graph") or not model.opset_import:
        raise ModelFileError(path, "not a valid ONNX model (truncated, or not ONNX at all)")
    if not model.graph.output:
        raise ModelFileError(path, "not a valid ONNX model: its graph has no outputs")
    return model


def _externals(model: Any) -> list[_External]:
    import onnx

    found = []
    for tensor in _all_initializers(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        length = info.get("length")
        found.append(
            _External(
                tensor=tensor.name,
                location=info.get("location", ""),
                offset=int(info.get("offset", 0) or 0),
                length=int(length) if length else None,
                needed=_tensor_bytes(tensor),
            )
        )
    return found


def _tensor_bytes(tensor: Any) -> int | None:
    import onnx

    bits = _BITS.get(str(onnx.TensorProto.DataType.Name(tensor.data_type)))
    if bits is None:
        return None
    return math.ceil(int(math.prod(tensor.dims)) * bits / 8)


def _check_external_files(path: Path, externals: list[_External]) -> tuple[str, ...]:
    sizes: dict[str, int] = {}
    for ext in externals:
        name = _safe_location(path, ext)
        if name not in sizes:
            sizes[name] = _external_size(path, name, ext.tensor)
        needed = max(ext.length or 0, ext.needed or 0)
        if ext.offset + needed > sizes[name]:
            raise ModelFileError(
                path,
                f"external data file {name!r} is shorter than tensor {ext.tensor!r} needs"
                f" ({ext.offset + needed} bytes, it has {sizes[name]})",
            )
    return tuple(sorted(sizes))


def _safe_location(path: Path, ext: _External) -> str:
    location = PurePosixPath(ext.location.replace("\\", "/"))
    if not ext.location or location.is_absolute() or ".." in location.parts:
        raise ModelFileError(
            path,
            f"tensor {ext.tensor!r} has external data at {ext.location!r},"
            " which is not a file beside the model",
        )
    return str(location)


def _external_size(path: Path, name: str, tensor: str) -> int:
    file = path.parent / name
    try:
        with open(file, "rb"):
            return file.stat().st_size
    except FileNotFoundError:
        reason = "is missing"
    except IsADirectoryError:
        reason = "is a directory"
    except PermissionError:
        reason = "cannot be read: permission denied"
    except OSError as error:
        reason = f"cannot be read: {error.strerror or error}"
    raise ModelFileError(path, f"external data file {name!r} of tensor {tensor!r} {reason}")


# --- digests --------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digests(
    model: Any, data: bytes, folder: Path, files: tuple[str, ...], file_sha256: str | None
) -> tuple[str, str, int]:
    """(digest, weights_digest, bytes of external data); each external file is read once."""
    weights = hashlib.sha256()
    for tensor in _all_initializers(model.graph):
        weights.update(tensor.SerializeToString(deterministic=True))
    if file_sha256 is not None and not files:
        return "sha256:" + file_sha256, "sha256:" + weights.hexdigest(), 0
    whole = hashlib.sha256(data)
    size = 0
    for name in files:
        for chunk in _chunks(folder / name):
            whole.update(chunk)
            weights.update(chunk)
            size += len(chunk)
    return "sha256:" + whole.hexdigest(), "sha256:" + weights.hexdigest(), size


def content_digest(path: Path, external_files: tuple[str, ...]) -> str:
    """`ModelFacts.digest` recomputed from the files alone, without parsing (no `onnx`)."""
    whole = hashlib.sha256()
    for file in (path, *(path.parent / name for name in external_files)):
        for chunk in _chunks(file):
            whole.update(chunk)
    return "sha256:" + whole.hexdigest()


def _chunks(file: Path) -> Iterator[bytes]:
    with open(file, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _graph_digest(model: Any) -> str:
    """sha256 of the model with every weight payload and external offset left out."""
    import onnx

    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for tensor in _all_initializers(stripped.graph):
        for name in _PAYLOAD_FIELDS:
            tensor.ClearField(name)
        kept = [(e.key, e.value) for e in tensor.external_data if e.key == "location"]
        tensor.ClearField("external_data")
        for key, value in kept:
            tensor.external_data.add(key=key, value=value)
    return _sha(stripped.SerializeToString(deterministic=True))


# --- graph walking --------------------------------------------------------------------------


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _all_initializers(graph: Any) -> Iterator[Any]:
    for g in _graphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices


WEIGHT_ELEMENTS = 1 << 18
"""Initializers of at least this many elements are weights, whose values no inference or
rule reads (counted from their dims: asking protobuf for a tensor's size walks its bytes)."""


def _drop_weight_payloads(model: Any) -> None:
    """Clear the values of the large dense initializers, once digested. Shape inference
    copies the whole model into C++ and back: 7.5 of the 13 s that inspecting a model with
    1 GB of embedded weights took. It needs their dims and types, kept, and the values of
    small ones only (shapes, axes, zero points). The graph digest clears every payload:
    unchanged."""
    for g in _graphs(model.graph):
        for tensor in g.initializer:
            if math.prod(tensor.dims) >= WEIGHT_ELEMENTS:
                for name in _PAYLOAD_FIELDS:
                    tensor.ClearField(name)


def _infer(model: Any) -> Any:
    """The model with inferred value types; the declared ones when inference fails."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:
        return model


def _type_map(model: Any) -> dict[str, int]:
    """Tensor name -> element type, over every graph (names are unique in practice)."""
    types: dict[str, int] = {}
    for g in _graphs(model.graph):
        for value in (*g.input, *g.output, *g.value_info):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                types[value.name] = value.type.tensor_type.elem_type
        for tensor in g.initializer:
            types[tensor.name] = tensor.data_type
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                elem = _constant_type(node)
                if elem:
                    types[node.output[0]] = elem
    return types


def _constant_type(node: Any) -> int:
    import onnx

    tp = onnx.TensorProto
    for attribute in node.attribute:
        if attribute.name == "value":
            return int(attribute.t.data_type)
        if attribute.name == "sparse_value":
            return int(attribute.sparse_tensor.values.data_type)
        if attribute.name in ("value_float", "value_floats"):
            return int(tp.FLOAT)
        if attribute.name in ("value_int", "value_ints"):
            return int(tp.INT64)
        if attribute.name in ("value_string", "value_strings"):
            return int(tp.STRING)
    return 0


def _dtype_name(elem: int) -> str | None:
    import onnx

    if not elem:
        return None
    try:
        name = str(onnx.TensorProto.DataType.Name(elem))
    except ValueError:
        return None
    return _CANONICAL.get(name, name.lower())


def _element_types(model: Any, types: dict[str, int]) -> Iterator[int]:
    yield from types.values()
    for g in _graphs(model.graph):
        for node in g.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t.data_type
                yield from (t.data_type for t in attribute.tensors)
                if attribute.name in _TYPE_ATTRIBUTES and attribute.HasField("i"):
                    yield attribute.i
            # A Q/DQ zero point carries the quantized type even when inference did not run.
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                yield types.get(node.input[2], 0)


def _dtypes(model: Any, types: dict[str, int]) -> set[str]:
    names = (_dtype_name(elem) for elem in _element_types(model, types))
    return {name for name in names if name}


def _graph(model: Any, types: dict[str, int]) -> Graph:
    ranks: dict[str, int] = {}
    constants: set[str] = set()
    nodes = []
    for g in _graphs(model.graph):
        for value in (*g.input, *g.output, *g.value_info):
            if value.type.tensor_type.HasField("shape"):
                ranks[value.name] = len(value.type.tensor_type.shape.dim)
        for tensor in g.initializer:
            ranks[tensor.name] = len(tensor.dims)
            constants.add(tensor.name)
        for node in g.node:
            nodes.append(node)
            if node.op_type == "Constant" and node.output:
                constants.add(node.output[0])
                for attribute in node.attribute:
                    if attribute.name == "value":
                        ranks[node.output[0]] = len(attribute.t.dims)
    outputs = {v.name for v in model.graph.output}
    return Graph(nodes=nodes, types=types, ranks=ranks, constants=constants, outputs=outputs)


def _tensor_info(value: Any) -> TensorInfo:
    tensor_type = value.type.tensor_type
    shape = tuple(
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
        for dim in tensor_type.shape.dim
    )
    return TensorInfo(name=value.name, dtype=_dtype_name(tensor_type.elem_type) or "", shape=shape)


def _graph_inputs(graph: Any) -> tuple[TensorInfo, ...]:
    # Old exporters list initializers as graph inputs too; those are weights, not inputs.
    weights = {t.name for t in graph.initializer}
    return tuple(_tensor_info(v) for v in graph.input if v.name not in weights)


def _shape_inputs(graph: Any) -> tuple[str, ...]:
    """Integer graph inputs whose values reach a shape operand, in graph order."""
    weights = {t.name for t in graph.initializer}
    candidates = {
        v.name
        for v in graph.input
        if v.name not in weights and v.type.tensor_type.elem_type in _INTEGER_TYPES
    }
    if not candidates:
        return ()
    producers: dict[str, Any] = {}
    pending: list[str] = []
    for g in _graphs(graph):
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            producers.update((out, node) for out in node.output)
            operands = SHAPE_OPERANDS.get(node.op_type, ())
            pending.extend(node.input[i] for i in operands if i < len(node.input))
    seen: set[str] = set()
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in candidates:
            found.add(name)
            continue
        producer = producers.get(name)
        if producer is not None and producer.op_type in SHAPE_ARITHMETIC:
            pending.extend(producer.input)
    return tuple(v.name for v in graph.input if v.name in found)


def _default_opset(model: Any) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 0
