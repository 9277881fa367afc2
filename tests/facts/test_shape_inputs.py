"""Shape inputs found in the ONNX graph agree with the TensorRT-RTX parser's own verdict.

Parse only, no build: `ITensor.is_shape_tensor` is what makes the library ask for values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.facts.onnx_inspect import inspect_model
from tests import modelgen

trt = pytest.importorskip("tensorrt_rtx")


def parser_shape_inputs(path: Path) -> tuple[str, ...]:
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [
        str(parser.get_error(i)) for i in range(parser.num_errors)
    ]
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    return tuple(t.name for t in inputs if t.is_shape_tensor)


@pytest.mark.parametrize(("case", "is_shape"), modelgen.SHAPE_INPUT_CASES.items())
def test_shape_inputs_agree_with_the_parser(tmp_path: Path, case: str, is_shape: bool) -> None:
    path = modelgen.shape_input_model(tmp_path / "m.onnx", case)
    expected = ("s",) if is_shape else ()
    assert parser_shape_inputs(path) == expected
    assert inspect_model(path).shape_inputs == expected


def test_float_models_have_no_shape_inputs(tmp_path: Path) -> None:
    assert inspect_model(modelgen.dynamic_batch_mlp(tmp_path / "m.onnx")).shape_inputs == ()
