from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from matrix.facts.onnx_inspect import ModelFileError, inspect_model
from matrix.facts.types import ModelFacts, TensorInfo
from tests import modelgen

Gen = Callable[..., Path]


@pytest.mark.parametrize(
    ("make", "dtypes", "fp32_gemm"),
    [
        (modelgen.mlp_fp32, {"fp32"}, True),
        (modelgen.dynamic_batch_mlp, {"fp32"}, True),
        (modelgen.matmul_fp16, {"fp16"}, False),
        (modelgen.conv_fp32, {"fp32"}, False),
        (modelgen.conv_fp16, {"fp16"}, False),
        (modelgen.matmul_bf16, {"fp32", "bf16"}, False),
        (modelgen.fp8_qdq_matmul, {"fp32", "fp8"}, True),
        (modelgen.fp4_weights_matmul, {"fp16", "fp4"}, False),
        (modelgen.int4_weights_matmul, {"fp16", "int4"}, False),
        (modelgen.int8_qdq_conv, {"fp32", "int8"}, False),
        (modelgen.int8_qdq_matmul, {"fp32", "int8"}, True),
        (modelgen.if_model, {"fp32", "bool"}, False),
        (modelgen.external_data_model, {"fp16"}, False),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_dtypes_and_fp32_gemm_of_generated_models(
    tmp_path: Path, make: Gen, dtypes: set[str], fp32_gemm: bool
) -> None:
    facts = inspect_model(make(tmp_path / "m.onnx"))
    assert facts.dtypes == dtypes
    assert bool(facts.found("fp32-gemm")) is fp32_gemm


def test_facts_of_a_plain_model(tmp_path: Path) -> None:
    path = modelgen.mlp_fp32(tmp_path / "mlp.onnx")
    facts = inspect_model(path)
    assert facts.path == str(path)
    assert facts.inputs == (TensorInfo("x", "fp32", (1, 16)),)
    assert facts.outputs == (TensorInfo("y", "fp32", (1, 8)),)
    assert facts.size == path.stat().st_size
    assert facts.external_files == ()
    assert facts.opset == 17
    assert facts.digest.startswith("sha256:") and len(facts.digest) == 7 + 64
    assert not facts.dynamic_inputs


def test_dynamic_dims_keep_their_names(tmp_path: Path) -> None:
    facts = inspect_model(modelgen.dynamic_batch_mlp(tmp_path / "m.onnx"))
    assert facts.inputs == (TensorInfo("x", "fp32", ("batch", 16)),)
    assert [t.name for t in facts.dynamic_inputs] == ["x"]


def _save(tmp_path: Path, graph: onnx.GraphProto, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    return path


def test_initializers_listed_as_inputs_are_not_inputs_and_unnamed_dims_are_none(
    tmp_path: Path,
) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT16, [4, 2], np.zeros(8, np.float16).tobytes(),
                           raw=True)  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "old-exporter",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, [None, 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT16, [4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [None, 2])],
        initializer=[w],
    )
    facts = inspect_model(_save(tmp_path, graph))
    assert facts.inputs == (TensorInfo("x", "fp16", (None, 4)),)


def test_every_onnx_element_type_has_a_canonical_name(tmp_path: Path) -> None:
    casts = {
        TensorProto.DOUBLE: "fp64",
        TensorProto.UINT8: "int8",
        TensorProto.INT32: "int32",
        TensorProto.INT64: "int64",
        TensorProto.FLOAT8E5M2: "fp8e5m2",
        TensorProto.FLOAT8E4M3FNUZ: "fp8e4m3fnuz",
        TensorProto.UINT4: "uint4",
        TensorProto.UINT16: "uint16",
    }
    nodes = [helper.make_node("Cast", ["x"], [f"c{t}"], to=t) for t in casts]
    outputs = [helper.make_tensor_value_info(f"c{t}", t, [2]) for t in casts]
    graph = helper.make_graph(
        nodes, "casts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], outputs
    )
    facts = inspect_model(_save(tmp_path, graph, opset=21))
    assert facts.dtypes == {"fp32", *casts.values()}


def test_types_inside_if_branches_are_seen(tmp_path: Path) -> None:
    then = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["t"], to=TensorProto.BFLOAT16)],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.BFLOAT16, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["e"], to=TensorProto.BFLOAT16)],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.BFLOAT16, [2])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],  # declared wrongly
    )
    facts = inspect_model(_save(tmp_path, graph))
    assert "bf16" in facts.dtypes


def test_declared_types_are_used_when_shape_inference_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise onnx.shape_inference.InferenceError("no")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    facts = inspect_model(modelgen.int8_qdq_matmul(tmp_path / "m.onnx"))
    # The int8 zero points and the float32 scale of the DequantizeLinear feeding the
    # MatMul say it all without inferred value types.
    assert facts.dtypes == {"fp32", "int8"}
    assert [n.kind for n in facts.nodes] == ["fp32-gemm"]


# --- digests -----------------------------------------------------------------------------


def test_weights_only_change_keeps_the_graph_digest(tmp_path: Path) -> None:
    a = inspect_model(modelgen.mlp_fp32(tmp_path / "a.onnx", seed=0))
    b = inspect_model(modelgen.mlp_fp32(tmp_path / "b.onnx", seed=1))
    again = inspect_model(modelgen.mlp_fp32(tmp_path / "c.onnx", seed=0))
    assert a.graph_digest == b.graph_digest
    assert a.digest != b.digest
    assert a.weights_digest != b.weights_digest
    assert (again.digest, again.weights_digest) == (a.digest, a.weights_digest)


def test_graph_change_changes_the_graph_digest(tmp_path: Path) -> None:
    a = inspect_model(modelgen.mlp_fp32(tmp_path / "a.onnx", features=16))
    b = inspect_model(modelgen.mlp_fp32(tmp_path / "b.onnx", features=32))
    assert a.graph_digest != b.graph_digest


def test_external_data_is_in_the_digest_and_size(tmp_path: Path) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx", size=4096)
    data = tmp_path / "m.onnx.data"
    before = inspect_model(path)
    assert before.external_files == ("m.onnx.data",)
    assert before.size == path.stat().st_size + data.stat().st_size == path.stat().st_size + 4096

    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    after = inspect_model(path)
    assert after.digest != before.digest
    assert after.weights_digest != before.weights_digest
    assert after.graph_digest == before.graph_digest


# --- bad files ---------------------------------------------------------------------------


def _reason(path: Path) -> str:
    with pytest.raises(ModelFileError) as caught:
        inspect_model(path)
    assert caught.value.path == Path(os.path.abspath(path))
    assert str(caught.value) == f"{caught.value.path}: {caught.value.reason}"
    return caught.value.reason


def test_missing_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.onnx") == "no such file"


def test_directory(tmp_path: Path) -> None:
    assert _reason(tmp_path) == "is a directory, not an ONNX file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = modelgen.conv_fp16(tmp_path / "m.onnx")
    path.chmod(0)
    assert _reason(path) == "cannot read it: permission denied"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    assert _reason(path) == "empty file, not an ONNX model"


@pytest.mark.parametrize(
    "content",
    [
        b"version: 1\nmodels:\n  - name: a\n",
        np.random.default_rng(7).bytes(4096),
        b"\x08\x08",  # a valid protobuf: ir_version=8 and nothing else
    ],
    ids=["yaml", "random", "no-graph"],
)
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    assert _reason(path).startswith("not a valid ONNX model (truncated")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_model(tmp_path: Path, keep: float) -> None:
    path = modelgen.mlp_fp32(tmp_path / "m.onnx")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    assert _reason(path).startswith("not a valid ONNX model (truncated")


def test_missing_external_data(tmp_path: Path) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    assert _reason(path) == "external data file 'm.onnx.data' of tensor 'w' is missing"


def test_short_external_data(tmp_path: Path) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx", size=4096)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    assert _reason(path) == (
        "external data file 'm.onnx.data' is shorter than tensor 'w' needs"
        " (4096 bytes, it has 1000)"
    )


def test_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx")
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "../elsewhere.data"
    path.write_bytes(model.SerializeToString())
    assert _reason(path) == (
        "tensor 'w' has external data at '../elsewhere.data', which is not a file beside the model"
    )


def test_inspection_never_loads_external_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = modelgen.external_data_model(tmp_path / "m.onnx", size=1 << 16)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("external data loaded into memory")

    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", forbidden)
    facts: ModelFacts = inspect_model(path)
    assert facts.size > 1 << 16


F16, F64 = TensorProto.FLOAT16, TensorProto.DOUBLE


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (modelgen.conv3d, [("fp32-conv3d", "Conv", "FP32")]),
        (
            lambda p: modelgen.conv3d(p, transpose=True),
            [("fp32-deconv3d", "ConvTranspose", "FP32")],
        ),
        (lambda p: modelgen.conv3d(p, elem=F64), [("fp32-conv3d", "Conv", "DOUBLE")]),
        (lambda p: modelgen.conv3d(p, elem=F16), []),
        (modelgen.einsum, [("fp32-gemm", "Einsum", "FP32")]),
        (lambda p: modelgen.einsum(p, equation="ij->ji"), []),
        (modelgen.matmul, [("fp32-gemm", "MatMul", "DOUBLE")]),
        (lambda p: modelgen.recurrent(p, op="GRU"), [("fp32-gemm", "GRU", "FP32")]),
        (lambda p: modelgen.recurrent(p, elem=F16), []),
        (modelgen.fp32_matmul_in_fp16_casts, []),
        (modelgen.shape_matmul, []),
        (modelgen.conv_fp32, []),
        (modelgen.cast_output, [("hw-dtype-op", "Cast", "makes 'y' (FP8)")]),
        (modelgen.quantized_io, []),
        (modelgen.quantized_weights_via, [("quantized-constant", "Transpose", "'wq' (INT8)")]),
        (
            lambda p: modelgen.quantized_weights_via(p, op="Identity"),
            [("quantized-constant", "Identity", "'wq' (INT8)")],
        ),
        (modelgen.int8_qdq_conv, []),
        (modelgen.int4_weights_matmul, []),
        (modelgen.dequantized_constant, [("quantized-scalar", "DequantizeLinear", "'c' (INT8)")]),
        (lambda p: modelgen.dequantized_constant(p, shape=(1,)), []),
    ],
)
def test_nodes_a_rule_may_refuse(
    tmp_path: Path, make: Callable[[Path], Path], found: list[tuple[str, str, str]]
) -> None:
    facts = inspect_model(make(tmp_path / "m.onnx"))
    assert [(n.kind, n.op, n.detail) for n in facts.nodes] == found


def test_dtypes_the_library_cannot_import_keep_their_own_names(tmp_path: Path) -> None:
    for elem, name in ((TensorProto.FLOAT8E5M2, "fp8e5m2"), (TensorProto.INT2, "int2")):
        facts = inspect_model(modelgen.dq_weights_matmul(tmp_path / f"{name}.onnx", elem=elem))
        assert name in facts.dtypes and "fp8" not in facts.dtypes


def test_weights_left_out_of_inference_change_no_fact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shape inference runs without the values of big initializers (it would copy them into
    C++ and back): the facts are those of inferring with every value. Here they come from
    inference: the Conv is 3-D only by the ranks it infers for two computed tensors."""
    import matrix.facts.onnx_inspect as inspect

    weights = np.random.default_rng(0).standard_normal((64, 1, 16, 16, 16)).astype(np.float32)
    assert weights.size >= inspect.WEIGHT_ELEMENTS
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Relu", ["x"], ["xr"]),
                helper.make_node("Identity", ["w"], ["wi"]),
                helper.make_node("Conv", ["xr", "wi"], ["y"]),
            ],
            "conv3d",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 20, 20, 20])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[onnx.numpy_helper.from_array(weights, "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    light = inspect_model(path)
    assert [f.kind for f in light.nodes] == ["fp32-conv3d"]
    monkeypatch.setattr(inspect, "WEIGHT_ELEMENTS", 1 << 62)
    assert inspect_model(path) == light
    monkeypatch.setattr(inspect, "_infer", lambda model: model)
    assert inspect_model(path).nodes == ()


def test_only_big_initializers_lose_their_values() -> None:
    """Small ones may be shapes, axes or zero points, whose values inference reads."""
    import matrix.facts.onnx_inspect as inspect

    big = onnx.numpy_helper.from_array(np.ones(inspect.WEIGHT_ELEMENTS, np.float32), "big")
    small = helper.make_tensor("shape", TensorProto.INT64, [3], [2, 32, 32])
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=[big, small]))
    inspect._drop_weight_payloads(model)
    kept = {t.name: t for t in model.graph.initializer}
    assert list(kept["big"].dims) == [inspect.WEIGHT_ELEMENTS] and not kept["big"].raw_data
    assert onnx.numpy_helper.to_array(kept["shape"]).tolist() == [2, 32, 32]
