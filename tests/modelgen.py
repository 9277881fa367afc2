"""Small real ONNX models for everyone's tests, written with `onnx.helper`.

Every function writes one model to `path` and returns `path`. Models are tiny so a
TensorRT-RTX build takes well under a second (except `slow_conv_stack`). `seed` changes
only weight values, never the graph, so tests can tell a weights-only change apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

# The IR version each opset was released with; TensorRT-RTX's parser reads these.
_IR_FOR_OPSET = {6: 3, 17: 8, 19: 9, 21: 10, 23: 11, 25: 12}

Dims = Sequence[int | str | None]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    opset: int = 17,
    name: str = "model",
    check: bool = True,
) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=_IR_FOR_OPSET[opset],
        producer_name="rtx-matrix-tests",
    )
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _value(name: str, elem: int, dims: Dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def _f32(name: str, array: np.ndarray) -> onnx.TensorProto:
    data = np.ascontiguousarray(array, dtype=np.float32)
    return helper.make_tensor(name, TensorProto.FLOAT, data.shape, data.tobytes(), raw=True)


def _f16(name: str, array: np.ndarray) -> onnx.TensorProto:
    data = np.ascontiguousarray(array, dtype=np.float16)
    return helper.make_tensor(name, TensorProto.FLOAT16, data.shape, data.tobytes(), raw=True)


def _raw(name: str, elem: int, dims: Sequence[int], payload: bytes) -> onnx.TensorProto:
    return helper.make_tensor(name, elem, list(dims), payload, raw=True)


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32) * 0.1


def _float(name: str, elem: int, array: np.ndarray) -> onnx.TensorProto:
    """`array` as a FLOAT, FLOAT16 or DOUBLE initializer."""
    numpy_type = {int(TensorProto.FLOAT): "float32", int(TensorProto.FLOAT16): "float16"}
    data = np.ascontiguousarray(array, dtype=numpy_type.get(elem, "float64"))
    return helper.make_tensor(name, elem, data.shape, data.tobytes(), raw=True)


_BITS: dict[int, int] = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.FLOAT4E2M1: 4,
         TensorProto.INT2: 2, TensorProto.UINT2: 2}  # fmt: skip


def _lowbit(name: str, elem: int, dims: Sequence[int], seed: int = 0) -> onnx.TensorProto:
    """Random values of a 2-, 4-, 8- or 16-bit type, never NaN for the 8-bit floats."""
    count = int(np.prod(dims))
    rng = _rng(seed)
    if elem in _BITS:
        payload = _packed_nibbles(rng, (count * _BITS[elem] + 3) // 4)
    elif elem in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16):
        size = count * (2 if elem in (TensorProto.INT16, TensorProto.UINT16) else 1)
        payload = rng.integers(0, 64, size=size, dtype=np.uint8).tobytes()
    else:
        payload = _fp8_e4m3_bytes(rng, count)
    return _raw(name, elem, dims, payload)


# --- plain float models -------------------------------------------------------------------


def mlp_fp32(path: Path, seed: int = 0, batch: int | str = 1, features: int = 16) -> Path:
    """x[batch, F] -> MatMul -> Add -> Relu -> MatMul -> y[batch, 8]; float32 GEMMs."""
    rng = _rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["y"]),
    ]
    inits = [
        _f32("w1", _weights(rng, features, 16)),
        _f32("b1", _weights(rng, 16)),
        _f32("w2", _weights(rng, 16, 8)),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [batch, features])],
        [_value("y", TensorProto.FLOAT, [batch, 8])],
        inits,
        name="mlp_fp32",
    )


def dynamic_batch_mlp(path: Path, seed: int = 0) -> Path:
    """`mlp_fp32` whose input `x` is [batch, 16] with a symbolic batch: needs a profile."""
    return mlp_fp32(path, seed=seed, batch="batch")


def matmul_fp16(path: Path, seed: int = 0) -> Path:
    """x[1, 16] fp16 -> MatMul -> y[1, 8] fp16."""
    rng = _rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [1, 16])],
        [_value("y", TensorProto.FLOAT16, [1, 8])],
        [_f16("w", _weights(rng, 16, 8))],
        name="matmul_fp16",
    )


def _conv(
    path: Path,
    seed: int,
    elem: int,
    tensor: Callable[[str, np.ndarray], onnx.TensorProto],
    name: str,
) -> Path:
    rng = _rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [tensor("w", _weights(rng, 8, 3, 3, 3)), tensor("b", _weights(rng, 8))]
    return _save(
        path,
        nodes,
        [_value("x", elem, [1, 3, 16, 16])],
        [_value("y", elem, [1, 8, 16, 16])],
        inits,
        name=name,
    )


def conv_fp32(path: Path, seed: int = 0) -> Path:
    """x[1,3,16,16] -> Conv 3x3 -> Relu; float32, no GEMM (builds on SM75)."""
    return _conv(path, seed, TensorProto.FLOAT, _f32, "conv_fp32")


def conv_fp16(path: Path, seed: int = 0) -> Path:
    return _conv(path, seed, TensorProto.FLOAT16, _f16, "conv_fp16")


def matmul_bf16(path: Path, seed: int = 0) -> Path:
    """x fp32 -> Cast bf16 -> MatMul with bf16 weights -> Cast fp32. No float32 GEMM."""
    rng = _rng(seed)
    bits = _weights(rng, 16, 8).view(np.uint32) >> 16  # bf16 = upper half of float32
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
        helper.make_node("MatMul", ["xb", "w"], ["yb"]),
        helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT),
    ]
    w = _raw("w", TensorProto.BFLOAT16, [16, 8], bits.astype(np.uint16).tobytes())
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 16])],
        [_value("y", TensorProto.FLOAT, [1, 8])],
        [w],
        name="matmul_bf16",
    )


# --- quantized models ---------------------------------------------------------------------


def _fp8_e4m3_bytes(rng: np.random.Generator, count: int) -> bytes:
    # Exponent field 4..9 and any mantissa: small normal numbers, never NaN (0x7f/0xff).
    magnitude = rng.integers(0x20, 0x48, size=count, dtype=np.uint8)
    sign = rng.integers(0, 2, size=count, dtype=np.uint8) << 7
    return (magnitude | sign).tobytes()


def _packed_nibbles(rng: np.random.Generator, count: int) -> bytes:
    return rng.integers(0, 256, size=(count + 1) // 2, dtype=np.uint8).tobytes()


def _qdq_activation(
    elem: int, zero_point: onnx.TensorProto
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """x -> QuantizeLinear -> DequantizeLinear -> xd (float32), per-tensor."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
    ]
    return nodes, [_f32("x_scale", np.array(0.05)), zero_point]


def fp8_qdq_matmul(path: Path, seed: int = 0) -> Path:
    """FLOAT8E4M3FN Q/DQ on the activation and DQ on FP8 weights feeding a MatMul."""
    weights = _raw("wq", TensorProto.FLOAT8E4M3FN, [16, 16], _fp8_e4m3_bytes(_rng(seed), 256))
    return _qdq_matmul(path, TensorProto.FLOAT8E4M3FN, weights, 0.1, "fp8_qdq_matmul", opset=19)


def _qdq_matmul(
    path: Path, dtype: int, weights: onnx.TensorProto, w_scale: float, name: str, opset: int = 17
) -> Path:
    """x [1, 16] -> Q/DQ in `dtype` -> MatMul with `weights` ("wq", 16x16, `dtype`) dequantized."""
    zp = _raw("x_zp", dtype, [], b"\x00")
    nodes, inits = _qdq_activation(dtype, zp)
    nodes += [
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    inits += [weights, _f32("w_scale", np.array(w_scale)), _raw("w_zp", dtype, [], b"\x00")]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 16])],
        [_value("y", TensorProto.FLOAT, [1, 16])],
        inits,
        opset=opset,
        name=name,
    )


def _block_dq_matmul(
    path: Path, seed: int, elem: int, name: str, k: int, n: int, block: int, opset: int
) -> Path:
    """x[1,K] @ DequantizeLinear(w[K,N], block-wise scales along K) with low-bit weights."""
    rng = _rng(seed)
    scales = np.abs(_weights(rng, k // block, n)) + 0.01
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "w_scale"], ["wd"], axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    inits = [_raw("wq", elem, [k, n], _packed_nibbles(rng, k * n)), _f16("w_scale", scales)]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [1, k])],
        [_value("y", TensorProto.FLOAT16, [1, n])],
        inits,
        opset=opset,
        name=name,
    )


def fp4_weights_matmul(path: Path, seed: int = 0) -> Path:
    """FLOAT4E2M1 weights (block size 16) dequantized to fp16 for a MatMul."""
    return _block_dq_matmul(
        path, seed, TensorProto.FLOAT4E2M1, "fp4_weights_matmul", k=32, n=16, block=16, opset=23
    )


def int4_weights_matmul(path: Path, seed: int = 0) -> Path:
    """INT4 weights (block size 32 along K) dequantized to fp16 for a MatMul."""
    return _block_dq_matmul(
        path, seed, TensorProto.INT4, "int4_weights_matmul", k=64, n=16, block=32, opset=21
    )


def _int8_weights(rng: np.random.Generator, *shape: int) -> onnx.TensorProto:
    values = rng.integers(-64, 64, size=shape, dtype=np.int8)
    return _raw("wq", TensorProto.INT8, list(shape), values.tobytes())


def int8_qdq_conv(path: Path, seed: int = 0) -> Path:
    """INT8 Q/DQ activation and per-channel INT8 weights feeding a Conv."""
    rng = _rng(seed)
    zp = _raw("x_zp", TensorProto.INT8, [], b"\x00")
    nodes, inits = _qdq_activation(TensorProto.INT8, zp)
    nodes += [
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits += [
        _int8_weights(rng, 8, 3, 3, 3),
        _f32("w_scale", np.full(8, 0.01)),
        _raw("w_zp", TensorProto.INT8, [8], bytes(8)),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [_value("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
        name="int8_qdq_conv",
    )


def int8_qdq_matmul(path: Path, seed: int = 0) -> Path:
    """INT8 Q/DQ activation and INT8 weights feeding a MatMul (dequantized to float32)."""
    weights = _int8_weights(_rng(seed), 16, 16)
    return _qdq_matmul(path, TensorProto.INT8, weights, 0.01, "int8_qdq_matmul")


def unfused_attention(path: Path, seed: int = 0) -> Path:
    """An ONNX `Attention` (opset 23) the parser imports and the builder refuses on every
    target (1.7.1: "Attention operation was not supported by a dedicated kernel"): a model
    that passes the plan and fails only in the build."""
    del seed
    qkv = [_value(n, TensorProto.FLOAT16, [1, 2, 4, 8]) for n in ("q", "k", "v")]
    nodes = [helper.make_node("Attention", ["q", "k", "v"], ["y"])]
    out = [_value("y", TensorProto.FLOAT16, [1, 2, 4, 8])]
    return _save(path, nodes, qkv, out, [], opset=23, name="unfused_attention")


# --- what TensorRT-RTX refuses (docs/tensorrt-rtx.md), and what it builds beside it ------


def conv3d(
    path: Path, seed: int = 0, elem: int = TensorProto.FLOAT, transpose: bool = False
) -> Path:
    """x[1,3,8,8,8] -> 3D Conv (or ConvTranspose, stride 2) in `elem`: FP32 and DOUBLE are
    refused for sm75, FP16 builds there."""
    rng = _rng(seed)
    if transpose:
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2, 2])
        weights, out = _weights(rng, 3, 4, 3, 3, 3), [1, 4, 17, 17, 17]
    else:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 6)
        weights, out = _weights(rng, 4, 3, 3, 3, 3), [1, 4, 8, 8, 8]
    return _save(
        path,
        [node],
        [_value("x", elem, [1, 3, 8, 8, 8])],
        [_value("y", elem, out)],
        [_float("w", elem, weights)],
        name="conv3d",
    )


def einsum(
    path: Path, seed: int = 0, equation: str = "ij,jk->ik", elem: int = TensorProto.FLOAT
) -> Path:
    """An Einsum over x[4,16] (and w[16,8] when the equation has two operands): every
    two-operand FP32/DOUBLE Einsum becomes a GEMM (refused for sm75); one operand does not."""
    rng = _rng(seed)
    two = "," in equation
    out = {"ij,jk->ik": [4, 8], "ij->ji": [16, 4], "ij->i": [4]}.get(equation, [4, 8])
    return _save(
        path,
        [helper.make_node("Einsum", ["x", "w"] if two else ["x"], ["y"], equation=equation)],
        [_value("x", elem, [4, 16])],
        [_value("y", elem, out)],
        [_float("w", elem, _weights(rng, 16, 8))] if two else [],
        name="einsum",
    )


def matmul(path: Path, seed: int = 0, elem: int = TensorProto.DOUBLE) -> Path:
    """x[4,16] @ w[16,8] in `elem` (DOUBLE runs as FP32: refused for sm75)."""
    return _save(
        path,
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [_value("x", elem, [4, 16])],
        [_value("y", elem, [4, 8])],
        [_float("w", elem, _weights(_rng(seed), 16, 8))],
        name="matmul",
    )


def recurrent(path: Path, seed: int = 0, op: str = "LSTM", elem: int = TensorProto.FLOAT) -> Path:
    """One LSTM, GRU or RNN layer (hidden 8) over x[5,1,4]: a loop of GEMMs, FP32 ones refused
    for sm75."""
    rng = _rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op] * 8
    return _save(
        path,
        [helper.make_node(op, ["x", "W", "R"], ["y"], hidden_size=8)],
        [_value("x", elem, [5, 1, 4])],
        [_value("y", elem, [5, 1, 1, 8])],
        [
            _float("W", elem, _weights(rng, 1, gates, 4)),
            _float("R", elem, _weights(rng, 1, gates, 8)),
        ],
        name="recurrent",
    )


def fp32_matmul_in_fp16_casts(path: Path, seed: int = 0) -> Path:
    """x fp16 -> Cast FP32 -> MatMul (FP32 weights) -> Cast FP16: the library runs the product
    in FP16, so it builds for sm75 (an FP32 GEMM on paper)."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "w"], ["yf"]),
        helper.make_node("Cast", ["yf"], ["y"], to=TensorProto.FLOAT16),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [4, 16])],
        [_value("y", TensorProto.FLOAT16, [4, 8])],
        [_f32("w", _weights(_rng(seed), 16, 8))],
        name="fp32_matmul_in_fp16_casts",
    )


def shape_matmul(path: Path, seed: int = 0) -> Path:
    """An FP32 MatMul over Shape(x), reshaping an fp16 x[4,8] to [8,4]: a shape computation,
    done at build time, so it builds for sm75."""
    del seed
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["sf", "axis"], ["row"]),
        helper.make_node("MatMul", ["row", "swap"], ["swapped"]),
        helper.make_node("Cast", ["swapped"], ["dims"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["dims", "flat"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        helper.make_tensor("axis", TensorProto.INT64, [1], [0]),
        _f32("swap", np.array([[0, 1], [1, 0]])),
        helper.make_tensor("flat", TensorProto.INT64, [1], [2]),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [4, 8])],
        [_value("y", TensorProto.FLOAT16, [8, 4])],
        inits,
        name="shape_matmul",
    )


def dq_weights_matmul(
    path: Path, seed: int = 0, elem: int = TensorProto.FLOAT8E5M2, opset: int = 25
) -> Path:
    """x[4,32] fp16 @ DequantizeLinear(w[32,16] in `elem`, per-tensor fp16 scale): INT2,
    UINT2, UINT4 and the FP8 variants but FLOAT8E4M3FN are imported on no target."""
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [4, 32])],
        [_value("y", TensorProto.FLOAT16, [4, 16])],
        [_lowbit("wq", elem, [32, 16], seed), _f16("ws", np.array(0.1))],
        opset=opset,
        name="dq_weights_matmul",
    )


def cast_output(path: Path, seed: int = 0, elem: int = TensorProto.FLOAT8E4M3FN) -> Path:
    """x fp32 -> Cast -> y in `elem`: an FP8/FP4/INT4 output made by a Cast, refused on every
    target (it must come from QuantizeLinear)."""
    del seed
    return _save(
        path,
        [helper.make_node("Cast", ["x"], ["y"], to=elem)],
        [_value("x", TensorProto.FLOAT, [4, 16])],
        [_value("y", elem, [4, 16])],
        [],
        opset=23,
        name="cast_output",
    )


def quantized_io(path: Path, seed: int = 0, elem: int = TensorProto.FLOAT8E4M3FN) -> Path:
    """x in `elem` -> DequantizeLinear -> Relu -> QuantizeLinear -> y in `elem`: FP8/FP4/INT4
    network inputs and outputs build (where the dtype's CC allows)."""
    del seed
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s"], ["xd"]),
        helper.make_node("Relu", ["xd"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [_value("x", elem, [4, 16])],
        [_value("y", elem, [4, 16])],
        [_f32("s", np.array(0.1)), _raw("z", elem, [], b"\x00")],
        opset=23,
        name="quantized_io",
    )


def quantized_weights_via(path: Path, seed: int = 0, op: str = "Transpose") -> Path:
    """INT8 weights -> `op` (Transpose or Identity) -> DequantizeLinear -> MatMul: a quantized
    constant not fed straight to its DequantizeLinear, refused on every target."""
    nodes = [
        helper.make_node(op, ["wq"], ["wt"]),
        helper.make_node("DequantizeLinear", ["wt", "ws"], ["wd"]),
        helper.make_node("MatMul", ["x", "wd"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [4, 16])],
        [_value("y", TensorProto.FLOAT16, [4, 16])],
        [_lowbit("wq", TensorProto.INT8, [16, 16], seed), _f16("ws", np.array(0.1))],
        opset=21,
        name="quantized_weights_via",
    )


def dequantized_constant(path: Path, seed: int = 0, shape: Sequence[int] = ()) -> Path:
    """x[4,16] + DequantizeLinear(an INT8 constant of `shape`), as onnxruntime quantizes the
    constants of a hardswish: rank 0 is refused on every target, shape [1] builds."""
    del seed
    nodes = [
        helper.make_node("DequantizeLinear", ["c", "cs"], ["cd"]),
        helper.make_node("Add", ["x", "cd"], ["y"]),
    ]
    constant = _raw("c", TensorProto.INT8, list(shape), bytes([30]) * int(np.prod(shape)))
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [4, 16])],
        [_value("y", TensorProto.FLOAT, [4, 16])],
        [constant, _f32("cs", np.array(0.1))],
        name="dequantized_constant",
    )


def qdq_conv(
    path: Path,
    seed: int = 0,
    act: int = TensorProto.INT8,
    zero_point: int = 0,
    weights: int = TensorProto.INT8,
    bias: str = "float",
    scale: float = 0.01,
) -> Path:
    """`int8_qdq_conv` with one thing changed: the activation type and zero point, the weight
    type, an INT32 quantized bias, or a weight scale. The parser refuses non-zero zero points,
    UINT8 weights, quantized biases and scales <= 0."""
    rng = _rng(seed)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
    ]
    inits = [
        _f32("xs", np.array(0.05)),
        _raw("xz", act, [], bytes([zero_point])),
        _lowbit("wq", weights, [8, 3, 3, 3], seed),
        _f32("ws", np.array(scale)),
    ]
    conv_inputs = ["xd", "wd"]
    if bias == "int32":
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"]))
        values = rng.integers(-100, 100, size=8, dtype=np.int32).tobytes()
        inits += [_raw("bq", TensorProto.INT32, [8], values), _f32("bs", np.array(0.0005))]
        conv_inputs.append("bd")
    else:
        inits.append(_f32("b", _weights(rng, 8)))
        conv_inputs.append("b")
    nodes.append(helper.make_node("Conv", conv_inputs, ["y"], pads=[1, 1, 1, 1]))
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [_value("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
        opset=21,
        name="qdq_conv",
    )


def mixed_matmul(path: Path, seed: int = 0) -> Path:
    """x fp16 @ w fp32: not valid ONNX, but what a partial FP16 conversion can leave; the
    parser refuses it."""
    return _save(
        path,
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [_value("x", TensorProto.FLOAT16, [4, 16])],
        [_value("y", TensorProto.FLOAT16, [4, 8])],
        [_f32("w", _weights(_rng(seed), 16, 8))],
        name="mixed_matmul",
        check=False,
    )


def single_op(path: Path, seed: int = 0, op: str = "QLinearMatMul") -> Path:
    """One operator the parser cannot import: QLinearMatMul, MatMulInteger, a dilated MaxPool,
    or an opset-6 Add (broadcasting before opset 7)."""
    del seed
    i8, f32 = TensorProto.INT8, TensorProto.FLOAT
    zero = _raw("z", i8, [], b"\x00")
    scale = _f32("s", np.array(0.1))
    opset = 17
    if op == "QLinearMatMul":
        node = helper.make_node(op, ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"])
        io, inits = (i8, [4, 16], i8, [4, 8]), [scale, zero, _raw("w", i8, [16, 8], bytes(128))]
    elif op == "MatMulInteger":
        node = helper.make_node(op, ["x", "w"], ["y"])
        io, inits = (i8, [4, 16], TensorProto.INT32, [4, 8]), [_raw("w", i8, [16, 8], bytes(128))]
    elif op == "MaxPool":
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])
        io, inits = (f32, [1, 4, 8, 8], f32, [1, 4, 6, 6]), []
    else:  # "Add" at opset 6
        node = helper.make_node("Add", ["x", "b"], ["y"], broadcast=1)
        io, inits, opset = (f32, [4, 16], f32, [4, 16]), [_f32("b", np.zeros(16))], 6
    return _save(
        path,
        [node],
        [_value("x", io[0], io[1])],
        [_value("y", io[2], io[3])],
        inits,
        opset=opset,
        name=f"single_{op.lower()}",
        check=opset > 6,
    )


# --- structure --------------------------------------------------------------------------


def if_model(path: Path, seed: int = 0) -> Path:
    """An `If` on a graph input: Relu(x) in one branch, Neg(x) in the other."""
    del seed
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])],
        "then",
        [],
        [_value("t", TensorProto.FLOAT, [1, 16])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [_value("e", TensorProto.FLOAT, [1, 16])],
    )
    nodes = [
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)
    ]
    inputs = [_value("x", TensorProto.FLOAT, [1, 16]), _value("cond", TensorProto.BOOL, [])]
    return _save(
        path, nodes, inputs, [_value("y", TensorProto.FLOAT, [1, 16])], [], name="if_model"
    )


def _i64(name: str, values: Sequence[int] | int) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.array(values, dtype=np.int64), name)


_F, _I64, _I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
_Case = tuple[
    list[onnx.NodeProto],
    list[onnx.ValueInfoProto],
    list[onnx.ValueInfoProto],
    list[onnx.TensorProto],
]


def _shape_case(case: str) -> _Case:
    """(nodes, inputs, outputs, initializers) of one SHAPE_INPUT_CASES entry; input `s` is
    the integer input under test."""
    node = helper.make_node
    y2 = [_value("y", _F, ["d0", "d1"])]
    to_y = node("Reshape", ["x", "s2"], ["y"])
    x26 = _value("x", _F, [2, 6])
    cases: dict[str, _Case] = {
        "reshape": ([node("Reshape", ["x", "s"], ["y"])], [x26, _value("s", _I64, [2])], y2, []),
        "expand": (
            [node("Expand", ["x", "s"], ["y"])],
            [_value("x", _F, [1, 4]), _value("s", _I64, [2])],
            y2,
            [],
        ),
        "constant-of-shape": (
            [node("ConstantOfShape", ["s"], ["y"], value=helper.make_tensor("v", _F, [1], [1]))],
            [_value("s", _I32, [3])],
            [_value("y", _F, ["d0", "d1", "d2"])],
            [],
        ),
        "resize-sizes": (
            [node("Resize", ["x", "", "", "s"], ["y"], mode="nearest")],
            [_value("x", _F, [1, 1, 4, 4]), _value("s", _I64, [4])],
            [_value("y", _F, ["d0", "d1", "d2", "d3"])],
            [],
        ),
        "tile": (
            [node("Tile", ["x", "s"], ["y"])],
            [_value("x", _F, [1, 4]), _value("s", _I64, [2])],
            y2,
            [],
        ),
        "slice-ends": (
            [node("Slice", ["x", "starts", "s"], ["y"])],
            [_value("x", _F, [8, 8]), _value("s", _I64, [2])],
            y2,
            [_i64("starts", [0, 0])],
        ),
        "range-limit": (
            [node("Range", ["start", "s", "delta"], ["y"])],
            [_value("s", _I64, [])],
            [_value("y", _I64, ["d0"])],
            [_i64("start", 0), _i64("delta", 1)],
        ),
        "topk": (
            [node("TopK", ["x", "s"], ["y", "i"])],
            [_value("x", _F, [1, 16]), _value("s", _I64, [1])],
            [*y2, _value("i", _I64, ["d0", "d1"])],
            [],
        ),
        "pad": (
            [node("Pad", ["x", "s"], ["y"])],
            [_value("x", _F, [4, 4]), _value("s", _I64, [4])],
            y2,
            [],
        ),
        "split": (
            [node("Split", ["x", "s"], ["y", "z"])],
            [_value("x", _F, [8]), _value("s", _I64, [2])],
            [_value("y", _F, ["d0"]), _value("z", _F, ["d1"])],
            [],
        ),
        "via-cast": (
            [node("Cast", ["s"], ["s2"], to=_I64), to_y],
            [x26, _value("s", _I32, [2])],
            y2,
            [],
        ),
        "via-concat": (
            [node("Concat", ["c", "s"], ["s2"], axis=0), to_y],
            [x26, _value("s", _I64, [1])],
            y2,
            [_i64("c", [3])],
        ),
        "via-arithmetic": (
            [node("Mul", ["s", "c"], ["m"]), node("Max", ["m", "c"], ["s2"]), to_y],
            [x26, _value("s", _I64, [2])],
            y2,
            [_i64("c", [1, 1])],
        ),
        "via-gather": (
            [
                node("Gather", ["s", "c"], ["s2"]),
                node("ConstantOfShape", ["s2"], ["y"], value=helper.make_tensor("v", _F, [1], [1])),
            ],
            [_value("s", _I64, [3])],
            y2,
            [_i64("c", [0, 2])],
        ),
        "via-2d-reshape": (
            [node("Reshape", ["s", "c"], ["s2"]), to_y],
            [x26, _value("s", _I64, [1, 2])],
            y2,
            [_i64("c", [2])],
        ),
        "gather-indices": (
            [node("Gather", ["x", "s"], ["y"])],
            [_value("x", _F, [8, 4]), _value("s", _I64, [3])],
            [_value("y", _F, [3, 4])],
            [],
        ),
        "int-data": (
            [node("Add", ["s", "c"], ["y"])],
            [_value("s", _I64, [2, 3])],
            [_value("y", _I64, [2, 3])],
            [_i64("c", 1)],
        ),
    }
    return cases[case]


SHAPE_INPUT_CASES = {
    "reshape": True,
    "expand": True,
    "constant-of-shape": True,
    "resize-sizes": True,
    "tile": True,
    "slice-ends": True,
    "range-limit": True,
    "topk": True,
    "pad": True,
    "split": True,
    "via-cast": True,
    "via-concat": True,
    "via-arithmetic": True,
    "via-gather": True,
    "via-2d-reshape": True,
    "gather-indices": False,
    "int-data": False,
}
"""Case of `shape_input_model` -> whether its input `s` is a shape input for the library."""


def shape_input_model(path: Path, case: str = "reshape", seed: int = 0) -> Path:
    """An integer input `s` used as SHAPE_INPUT_CASES[case] says. The default, "reshape",
    is x[2, 6] float reshaped by the INT64 input s[2]: a shape input, which the library
    builds only when a profile gives its values (`set_shape_input`)."""
    del seed
    nodes, inputs, outputs, inits = _shape_case(case)
    return _save(path, nodes, inputs, outputs, inits, name=f"shape_input_{case}")


def named_dims_model(path: Path, dims: Sequence[Dims] = ((1, 3, "S", "S"),), seed: int = 0) -> Path:
    """One Relu per input: float input `x{i}` of dims[i] (ints, dim names, None for an unnamed
    dynamic dim) -> `y{i}`. Dims that share a name are equal for the library."""
    del seed
    nodes = [helper.make_node("Relu", [f"x{i}"], [f"y{i}"]) for i in range(len(dims))]
    inputs = [_value(f"x{i}", _F, shape) for i, shape in enumerate(dims)]
    outputs = [_value(f"y{i}", _F, shape) for i, shape in enumerate(dims)]
    return _save(path, nodes, inputs, outputs, [], name="named_dims")


def external_data_model(
    path: Path, size: int = 4096, seed: int = 0, data_name: str | None = None
) -> Path:
    """x[1, K] (fp16) @ w[K, 8] (fp16) with w in an external-data file of about `size` bytes.

    The data file is written in 1 MiB chunks, so a 1 GB model never sits in memory; past
    the first MiB the random values repeat, which keeps a 1 GB file quick to write.
    """
    k = max(1, size // 16)
    data_name = data_name or f"{path.name}.data"
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = (_rng(seed).standard_normal(min(k * 8, 1 << 19)) * 0.01).astype(np.float16)
    remaining = k * 8
    with open(path.parent / data_name, "wb") as out:
        while remaining:
            out.write(chunk[:remaining].tobytes())
            remaining -= min(remaining, len(chunk))
    weight = TensorProto(
        name="w", data_type=TensorProto.FLOAT16, dims=[k, 8], data_location=TensorProto.EXTERNAL
    )
    for key, value in (("location", data_name), ("offset", "0"), ("length", str(k * 16))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "external",
        [_value("x", TensorProto.FLOAT16, [1, k])],
        [_value("y", TensorProto.FLOAT16, [1, 8])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return path


def slow_conv_stack(path: Path, layers: int = 700, channels: int = 8, seed: int = 0) -> Path:
    """A stack of fp16 3x3 convolutions for kill/timeout tests: about 3.3 s to build here
    (tensorrt-rtx 1.7.1, 2 shared cores); build time grows with `layers`."""
    rng = _rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current = "x"
    for i in range(layers):
        nodes.append(helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        inits.append(_f16(f"w{i}", _weights(rng, channels, channels, 3, 3)))
        current = f"r{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT16, [1, channels, 64, 64])],
        [_value("y", TensorProto.FLOAT16, [1, channels, 64, 64])],
        inits,
        name="slow_conv_stack",
    )
