"""The rules table: what TensorRT-RTX accepts, as data, one table per library release.

Every number here was measured with the real library (docs/tensorrt-rtx.md) and is re-checked
by tests/plan/test_rules_vs_builder.py, which builds small models for each CC and compares.
Each rule has a stable name and a one-line reason that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from matrix.errors import MatrixError
from matrix.facts import node_findings as nf
from matrix.facts import types as ft
from matrix.plan.capabilities import CC, KNOWN, SM75, SM80, SM86, SM89, SM120, SM121

# Rule ids: stable strings shown in `plan` and its JSON, so users can grep for them.
DTYPE_NEEDS = "dtype-needs-cc"
CURRENT_ALONE = "current-alone"
CURRENT_NEEDS_GPU = "current-needs-gpu"
WEIGHTLESS_NEEDS_GPU = "weightless-needs-gpu"
WEIGHTLESS_ONE_CC = "weightless-one-cc"
TURING_MIXED = "turing-mixed"
TURING_FP32_GEMM = "turing-fp32-gemm"
DYNAMIC_NEEDS_PROFILE = "dynamic-needs-profile"
SHAPE_INPUT_NEEDS_VALUES = "shape-input-needs-values"
PROFILE_SHARED_DIMS = "profile-shared-dims"
DEFAULT_NARROWED = "default-narrowed"
EXCLUDED = "excluded"
DTYPE_UNSUPPORTED = "dtype-unsupported"
TURING_FP32_CONV3D = "turing-fp32-conv3d"
HW_DTYPE_OUTSIDE_QDQ = "hw-dtype-outside-qdq"
QUANTIZED_CONSTANT = "quantized-constant-needs-dq"
QUANTIZED_SCALAR = "quantized-scalar"
PARSER_UNSUPPORTED = "parser-unsupported"
QDQ_ZERO_POINT = "qdq-zero-point"
QDQ_INT32_BIAS = "qdq-int32-bias"
QDQ_UINT8 = "qdq-uint8"
QDQ_SCALE = "qdq-scale-not-positive"
QDQ_ONLY = "qdq-format-only"
MIXED_INPUT_TYPES = "mixed-input-types"


@dataclass(frozen=True)
class NodeRule:
    """A graph pattern (a `matrix.facts.node_findings` kind) the builder refuses."""

    rule: str
    refused_on: tuple[CC, ...] | None
    """The CCs that refuse it; None: every target (the library cannot build it at all)."""
    reason: str
    """Formatted with `node`, `op`, `detail`, `more` (", and N more") and `ccs`."""


@dataclass(frozen=True)
class ParserHint:
    """Names the rule and the fix for a parser error, matched on its text or op type."""

    rule: str
    reason: str
    needles: tuple[str, ...] = ()
    ops: frozenset[str] = frozenset()

    def matches(self, op: str, message: str) -> bool:
        return op in self.ops or any(n in message for n in self.needles)


@dataclass(frozen=True)
class RuleSet:
    tensorrt_rtx: str
    """The `major.minor` release these rules were measured on."""
    known: tuple[CC, ...]
    """CCs the builder accepts as explicit targets."""
    default_targets: tuple[CC, ...]
    """What an engine built with no CC set runs on (besides newer GPUs)."""
    dtype_min_cc: Mapping[str, CC]
    """Element types that need at least this CC; anything else runs on every known CC."""
    dtype_labels: Mapping[str, str]
    dtype_unsupported: Mapping[str, str]
    """Element types the library cannot import on any target, with their ONNX names."""
    node_rules: Mapping[str, NodeRule]
    """Graph patterns the builder refuses, by `matrix.facts.node_findings` kind."""
    parser_hints: tuple[ParserHint, ...]
    """Known parser errors: the first that matches names the rule, else `parser-unsupported`."""
    fast_only_when_alone: tuple[CC, ...]
    """CCs that, mixed with others, give an engine not guaranteed fast on the others."""
    weightless_max_ccs: int = 1
    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# Quantized operators of the QOperator format, dynamic quantization and onnxruntime's
# MatMulNBits: the parser has no importer for them (measured).
_QOPERATOR_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
    "QLinearSoftmax", "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear",
    "MatMulNBits",
})  # fmt: skip
_TO_FP16 = "convert the model to FP16 or leave out sm75"

RULES_1_7 = RuleSet(
    tensorrt_rtx="1.7",
    known=KNOWN,
    default_targets=(SM80, SM86, SM89, SM120, SM121),
    dtype_min_cc=MappingProxyType({ft.FP4: SM120, ft.FP8: SM89, ft.BF16: SM80, ft.INT4: SM80}),
    dtype_labels=MappingProxyType({ft.FP4: "FP4", ft.FP8: "FP8", ft.BF16: "BF16", ft.INT4: "INT4"}),
    dtype_unsupported=MappingProxyType(
        {
            ft.FP8_E5M2: "FLOAT8E5M2",
            ft.FP8_E4M3FNUZ: "FLOAT8E4M3FNUZ",
            ft.FP8_E5M2FNUZ: "FLOAT8E5M2FNUZ",
            ft.FP8_E8M0: "FLOAT8E8M0",
            ft.UINT4: "UINT4",
            ft.INT2: "INT2",
            ft.UINT2: "UINT2",
            ft.FP6: "FLOAT6",
            "int16": "INT16",
            "uint16": "UINT16",
            "uint32": "UINT32",
            "uint64": "UINT64",
            "complex64": "COMPLEX64",
            "complex128": "COMPLEX128",
            "string": "STRING",
        }
    ),
    node_rules=MappingProxyType(
        {
            nf.FP32_GEMM: NodeRule(
                TURING_FP32_GEMM,
                (SM75,),
                "{op} node {node!r}{more} computes a GEMM in {detail}, which TensorRT-RTX cannot "
                "compile for {ccs} (no FP32 GEMM on Turing; DOUBLE runs as FP32); " + _TO_FP16,
            ),
            nf.FP32_CONV3D: NodeRule(
                TURING_FP32_CONV3D,
                (SM75,),
                "{op} node {node!r}{more} is a 3D convolution in {detail}, which TensorRT-RTX "
                "cannot compile for {ccs}; " + _TO_FP16,
            ),
            nf.FP32_DECONV3D: NodeRule(
                TURING_FP32_CONV3D,
                (SM75,),
                "{op} node {node!r}{more} is a 3D deconvolution in {detail}, which TensorRT-RTX "
                "cannot compile for {ccs}; " + _TO_FP16,
            ),
            nf.HW_DTYPE_OP: NodeRule(
                HW_DTYPE_OUTSIDE_QDQ,
                None,
                "{op} node {node!r}{more} {detail}: an FP8, FP4 or INT4 tensor must come from "
                "QuantizeLinear or a constant and go into DequantizeLinear (Reshape, Transpose, "
                "Flatten, Concat or Identity may sit between)",
            ),
            nf.QUANTIZED_CONSTANT: NodeRule(
                QUANTIZED_CONSTANT,
                None,
                "the quantized constant {detail} goes into {op} node {node!r}{more}, not straight "
                "into a DequantizeLinear as TensorRT-RTX requires: move the {op} after the "
                "DequantizeLinear, or fold it into the stored weights",
            ),
            nf.QUANTIZED_SCALAR: NodeRule(
                QUANTIZED_SCALAR,
                None,
                "{op} node {node!r}{more} dequantizes the scalar {detail}: TensorRT-RTX refuses "
                "a quantized constant of rank 0; give it shape [1], or keep such constants in "
                "float (onnxruntime quantizes them: leave their nodes out of quantization)",
            ),
        }
    ),
    parser_hints=(
        ParserHint(
            QDQ_ZERO_POINT,
            "zero points must be 0: quantize symmetrically (onnxruntime: extra_options "
            "ActivationSymmetric=True, WeightSymmetric=True)",
            needles=("Non-zero zero point",),
        ),
        ParserHint(
            QDQ_INT32_BIAS,
            "do not quantize the bias: TensorRT-RTX dequantizes only FP8, FP4, INT4, INT8 and "
            "UINT8 (onnxruntime: extra_options QuantizeBias=False)",
            needles=("has type Int32 but must have type",),
        ),
        ParserHint(
            QDQ_UINT8,
            "UINT8 weights or inputs cannot be dequantized: quantize to INT8 (onnxruntime: "
            "QuantType.QInt8)",
            needles=("unsupported input type of UINT8",),
        ),
        ParserHint(
            QDQ_SCALE,
            "every quantization scale must be positive (a zero or negative scale is refused): "
            "recalibrate or clamp the scales",
            needles=("Scale coefficients must all be positive",),
        ),
        ParserHint(
            QDQ_ONLY,
            "TensorRT-RTX reads quantized models in Q/DQ form only: quantize statically with "
            "quant_format=QuantFormat.QDQ (not QOperator, dynamic or MatMulNBits)",
            ops=_QOPERATOR_OPS,
        ),
        ParserHint(
            MIXED_INPUT_TYPES,
            "its inputs have different float types (a partial FP16 conversion can leave one "
            "in FP32): give them one type, e.g. with a Cast",
            needles=("must have same input types", "must be of same type"),
        ),
        ParserHint(
            DTYPE_UNSUPPORTED,
            "the model uses an element type TensorRT-RTX cannot import",
            needles=(
                "Failed to convert ONNX da",
                "Unsupported data type",
                "Failed to import initializer",
            ),
        ),
    ),
    fast_only_when_alone=(SM75,),
)

TABLES: Mapping[str, RuleSet] = MappingProxyType({"1.7": RULES_1_7})


def rules_for(tensorrt_rtx_version: str) -> RuleSet:
    """The table for an installed library version such as `1.7.1.116`."""
    release = ".".join(tensorrt_rtx_version.split(".")[:2])
    try:
        return TABLES[release]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise MatrixError(
            f"no rules table for TensorRT-RTX {tensorrt_rtx_version} (this rtx-matrix knows "
            f"{known}); install a matching tensorrt-rtx or upgrade rtx-matrix"
        ) from None
