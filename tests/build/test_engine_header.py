"""Engine header parsing, and the CC masks the real library writes (the planner's ground truth)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from matrix.build.builder import build, library_version
from matrix.build.engine_header import (
    EngineHeader,
    describe_mask,
    read_header,
    version_tuple,
)
from matrix.build.messages import BuildRequest
from matrix.build.temp_files import temp_files, temp_path
from matrix.manifest.types import BuilderOptions
from matrix.plan.capabilities import SM75, SM80, SM86, SM89, SM120, SM121, mask_of
from tests import modelgen

# Observed with tensorrt-rtx 1.7.1.116. The default build's mask names every CC from 8.0 up
# and "newer" whatever the model's dtypes: the header records the compile targets, not where
# FP8 or FP4 kernels can run, so the planner's expected mask for `default` is always 0x7e.
MASKS: list[tuple[str, Callable[[Path], Path], tuple[str, ...], int]] = [
    ("default-fp32", modelgen.mlp_fp32, (), 0x7E),
    ("default-fp8", modelgen.fp8_qdq_matmul, (), 0x7E),
    ("default-fp4", modelgen.fp4_weights_matmul, (), 0x7E),
    ("sm120-sm121", modelgen.conv_fp32, ("sm120", "sm121"), 0x30),
    ("sm75", modelgen.conv_fp32, ("sm75",), 0x01),
    ("sm75-sm86", modelgen.conv_fp32, ("sm75", "sm86"), 0x05),
    ("sm89", modelgen.conv_fp32, ("sm89",), 0x08),
]


def engine_bytes(version: bytes = b"\x01\x07\x01\x74", mask: int = 0x7E) -> bytes:
    return bytes(24) + version + bytes(4) + mask.to_bytes(8, "little") + b"rest of engine"


def test_reads_version_and_mask_from_bytes() -> None:
    header = read_header(engine_bytes(mask=0x05))
    assert header == EngineHeader(version=(1, 7, 1, 116), mask=0x05)
    assert header.version_text == "1.7.1.116"
    assert header.targets == ("sm75", "sm86")


def test_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "e.engine"
    path.write_bytes(engine_bytes(mask=0x7E))
    assert read_header(path).targets == ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")
    assert read_header(str(path)).mask == 0x7E


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a TensorRT-RTX engine: 0 bytes, header needs 40"),
        (engine_bytes()[:39], "not a TensorRT-RTX engine: 39 bytes, header needs 40"),
        (bytes(64), "not a TensorRT-RTX engine header: version 0.0.0.0, CC mask 0x0"),
        (engine_bytes(mask=0x80), "not a TensorRT-RTX engine header: version 1.7.1.116, "
                                  "CC mask 0x80"),
    ],
)
def test_refuses_short_or_malformed_data(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as error:
        read_header(data)
    assert str(error.value) == message


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "nope.engine")


def test_describe_mask_and_capabilities_agree() -> None:
    assert mask_of((SM80, SM86, SM89, SM120, SM121), newer=True) == 0x7E
    assert describe_mask(mask_of((SM75, SM89))) == ("sm75", "sm89")
    assert describe_mask(0x40) == ("newer",)


def test_version_tuple() -> None:
    assert version_tuple("1.7.1.116") == (1, 7, 1, 116)
    with pytest.raises(ValueError, match="four-part"):
        version_tuple("1.7")


def test_temp_names_are_hidden_siblings(tmp_path: Path) -> None:
    engine = tmp_path / "m@sm86.engine"
    assert temp_path(engine, pid=42) == tmp_path / ".m@sm86.engine.tmp-42"
    (tmp_path / ".m@sm86.engine.tmp-42").write_bytes(b"")
    (tmp_path / ".m@sm86.engine.tmp-7").write_bytes(b"")
    (tmp_path / ".other.engine.tmp-42").write_bytes(b"")
    engine.write_bytes(b"")
    assert sorted(p.name for p in temp_files(engine)) == [
        ".m@sm86.engine.tmp-42", ".m@sm86.engine.tmp-7"]
    assert temp_files(tmp_path / "missing" / "x.engine") == []


@pytest.mark.parametrize(("case", "make_model", "ccs", "mask"), MASKS, ids=[m[0] for m in MASKS])
def test_header_mask_written_by_the_library(tmp_path: Path, case: str,
                                            make_model: Callable[[Path], Path],
                                            ccs: tuple[str, ...], mask: int) -> None:
    model = make_model(tmp_path / f"{case}.onnx")
    engine = tmp_path / f"{case}.engine"
    result = build(BuildRequest(
        cell_id=case, onnx=str(model), ccs=ccs, use_gpu=False, weightless=False,
        options=BuilderOptions(), profiles=(), engine_path=str(engine),
        log_path=str(tmp_path / f"{case}.log")))
    assert result.ok, result.error
    header = read_header(engine)
    assert header.version == version_tuple(library_version())
    assert header.mask == mask == result.header_mask
