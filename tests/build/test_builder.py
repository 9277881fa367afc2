"""Real TensorRT-RTX builds of tiny generated models through `matrix.build.builder.build`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from matrix.build import builder
from matrix.build.builder import BuildError, build, library_version
from matrix.build.engine_header import read_header, version_tuple
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.lockfile.types import TensorSpec
from matrix.manifest.types import BuilderOptions, InputShape, Profile
from tests import modelgen
from tests.factories import build_request as request

BATCH_PROFILE = Profile((InputShape("x", (1, 16), (4, 16), (8, 16)),))




def leftovers(req: BuildRequest) -> list[str]:
    """Temp files next to the engine: there must never be any after `build` returns."""
    folder = Path(req.engine_path).parent
    return sorted(p.name for p in folder.glob(".*.tmp-*")) if folder.exists() else []


def assert_failed(result: BuildResult, req: BuildRequest, text: str) -> None:
    assert not result.ok
    assert result.error is not None and text in result.error, result.error
    assert "\n" not in result.error
    assert result.sha256 is None and result.size is None
    assert not Path(req.engine_path).exists()
    assert leftovers(req) == []


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "mlp": modelgen.mlp_fp32(folder / "mlp.onnx"),
        "conv": modelgen.conv_fp32(folder / "conv.onnx"),
        "dynamic": modelgen.dynamic_batch_mlp(folder / "dynamic.onnx"),
        "external": modelgen.external_data_model(folder / "external.onnx", size=8192),
    }


def test_default_build_writes_a_checked_engine(tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["mlp"], expected_mask=0x7E)
    result = build(req)
    assert result.ok, result.error
    data = Path(req.engine_path).read_bytes()
    assert result.size == len(data) > 1000
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.header_mask == 0x7E
    assert read_header(data).version == version_tuple(library_version())
    assert result.seconds > 0 and result.error is None
    assert leftovers(req) == []


def initializer_bytes(model: Path) -> int:
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(model)).graph.initializer)


def test_engine_facts_come_from_the_network_and_the_builders_report(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    result = build(request(tmp_path, models["mlp"]))
    assert result.ok, result.error
    assert result.io == (
        TensorSpec("x", "input", "fp32", (1, 16)),
        TensorSpec("y", "output", "fp32", (1, 8)),
    )
    # The builder reports every float32 weight of this MLP: nothing folded, nothing cast.
    assert result.weights_bytes == initializer_bytes(models["mlp"]) == 1600
    assert result.stripped_weights_bytes is None  # only weightless engines have any


def test_engine_facts_show_profile_decided_dims_and_half_precision(tmp_path: Path) -> None:
    fp16 = modelgen.conv_fp16(tmp_path / "conv16.onnx")
    result = build(request(tmp_path, fp16, name="fp16"))
    assert result.ok, result.error
    assert [(t.mode, t.dtype) for t in result.io] == [("input", "fp16"), ("output", "fp16")]
    dynamic = modelgen.dynamic_batch_mlp(tmp_path / "dynamic.onnx")
    result = build(request(tmp_path, dynamic, name="dyn", profiles=(BATCH_PROFILE,)))
    assert result.ok, result.error
    assert [t.shape for t in result.io] == [(-1, 16), (-1, 8)]


@pytest.mark.parametrize(("ccs", "mask"), [(("sm86",), 0x04), (("sm80", "sm89", "sm121"), 0x2A)])
def test_compute_capabilities_reach_the_header(tmp_path: Path, models: dict[str, Path],
                                               ccs: tuple[str, ...], mask: int) -> None:
    result = build(request(tmp_path, models["mlp"], ccs=ccs, expected_mask=mask))
    assert result.ok, result.error
    assert result.header_mask == mask


def test_fp32_gemm_on_turing_fails_with_the_library_text(tmp_path: Path,
                                                          models: dict[str, Path]) -> None:
    req = request(tmp_path, models["mlp"], ccs=("sm75",))
    result = build(req)
    assert_failed(result, req, "Cannot compile operation 'node_of_h0' for Turing (SM75): "
                               "FP32 GEMM is not supported")
    log = Path(req.log_path).read_text()
    assert "FP32 GEMM is not supported" in log
    assert log.rstrip().splitlines()[-1].startswith("FAILED: IBuilder::buildSerializedNetwork")


def test_failure_keeps_the_previous_engine(tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["mlp"], ccs=("sm75",))
    Path(req.engine_path).parent.mkdir(parents=True)
    Path(req.engine_path).write_bytes(b"engine of an earlier run")
    assert not build(req).ok
    assert Path(req.engine_path).read_bytes() == b"engine of an earlier run"
    assert leftovers(req) == []


def test_unknown_target_fails_before_building(tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"], ccs=("sm90",))
    assert_failed(build(req), req, f"TensorRT-RTX {library_version()} has no target sm90")


def test_header_mask_other_than_asked_fails_the_cell(tmp_path: Path,
                                                     models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"], ccs=("sm75",), expected_mask=0x7E)
    result = build(req)
    assert_failed(result, req, "")
    assert result.error == ("engine header targets sm75, but sm80 sm86 sm89 sm120 sm121 newer "
                            "was asked")


def test_header_from_another_library_version_fails(tmp_path: Path,
                                                   models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"])
    assert build(req).ok
    data = bytearray(Path(req.engine_path).read_bytes())
    data[27] += 1
    forged = tmp_path / "forged.engine"
    forged.write_bytes(data)
    major, minor, patch, build_number = version_tuple(library_version())
    with pytest.raises(BuildError) as error:
        builder._check_header(forged, req)
    assert str(error.value) == (f"engine header says TensorRT-RTX {major}.{minor}.{patch}."
                                f"{build_number + 1}, but {library_version()} built it")


def test_dynamic_input_needs_a_profile(tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["dynamic"], name="noprofile")
    assert_failed(build(req), req, "Network has dynamic or shape inputs, but no optimization "
                                   "profile has been defined")
    result = build(request(tmp_path, models["dynamic"], profiles=(BATCH_PROFILE,)))
    assert result.ok, result.error


def test_profile_for_a_missing_input_fails(tmp_path: Path, models: dict[str, Path]) -> None:
    profile = Profile((InputShape("image", (1, 16), (1, 16), (1, 16)),))
    req = request(tmp_path, models["dynamic"], profiles=(profile,))
    result = build(req)
    assert_failed(result, req, "")
    assert result.error == ("profile 1 names input 'image', which the network does not have "
                            "(it has x)")


def test_profile_out_of_order_is_refused_by_the_library(tmp_path: Path,
                                                        models: dict[str, Path]) -> None:
    profile = Profile((InputShape("x", (8, 16), (4, 16), (1, 16)),))
    req = request(tmp_path, models["dynamic"], profiles=(profile,))
    result = build(req)
    assert not result.ok and result.error
    assert not Path(req.engine_path).exists()


def test_external_data_is_read(tmp_path: Path, models: dict[str, Path]) -> None:
    result = build(request(tmp_path, models["external"]))
    assert result.ok, result.error


def test_options_are_applied(tmp_path: Path, models: dict[str, Path]) -> None:
    options = BuilderOptions(optimization_level=1, tiling_optimization_level="fast",
                             max_aux_streams=0, workspace_bytes=1 << 24)
    result = build(request(tmp_path, models["mlp"], options=options))
    assert result.ok, result.error


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (BuilderOptions(optimization_level=9), "TensorRT-RTX refused optimization_level 9 "
                                               "(it kept 5)"),
        (BuilderOptions(workspace_bytes=-1), "invalid builder option workspace_bytes=-1: "
                                             "TensorRT-RTX does not accept this value"),
        (BuilderOptions(max_aux_streams=-3), "TensorRT-RTX refused max_aux_streams -3 "
                                             "(it kept -1)"),
        (BuilderOptions(tiling_optimization_level="extreme"),
         "unknown tiling_optimization_level 'extreme' (one of none, fast, moderate, full)"),
    ],
)
def test_invalid_options_fail_the_cell(tmp_path: Path, models: dict[str, Path],
                                       options: BuilderOptions, error: str) -> None:
    req = request(tmp_path, models["mlp"], options=options)
    result = build(req)
    assert_failed(result, req, "")
    assert result.error == error


def test_progress_events_frame_the_builder_phases(tmp_path: Path,
                                                  models: dict[str, Path]) -> None:
    events: list[ProgressEvent] = []
    assert build(request(tmp_path, models["conv"], name="c"), events.append).ok
    assert events[0].kind == "start" and events[-1].kind == "end"
    assert events[0].pid > 0 and {e.cell_id for e in events} == {"c"}
    phases = [e for e in events if e.kind == "phase"]
    assert phases[0].phase == "Building engine" and phases[0].step == 0
    assert phases[0].steps > 0
    finished = [e for e in phases if e.phase == "Building engine" and e.step == e.steps]
    assert len(finished) == 1
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(1 <= e.step <= e.steps for e in steps)


def test_a_raising_progress_callback_does_not_break_the_build(tmp_path: Path,
                                                              models: dict[str, Path]) -> None:
    def explode(event: ProgressEvent) -> None:
        raise RuntimeError("display went away")

    assert build(request(tmp_path, models["conv"]), explode).ok


def test_log_file_has_info_and_up_with_severity_and_no_verbose_noise(
        tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"])
    assert build(req).ok
    log = Path(req.log_path).read_text()
    assert "] [TRT] [I] Input filename:" in log
    assert "] [TRT] [I] Engine generation completed" in log
    assert "] [TRT] [V] " not in log


def test_stdout_is_the_log_only_during_the_build(tmp_path: Path, models: dict[str, Path],
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    req = request(tmp_path, models["conv"])
    print("before", flush=True)
    assert build(req).ok
    print("after", flush=True)
    assert capfd.readouterr().out == "before\nafter\n"
    log = Path(req.log_path).read_text()
    assert "before" not in log and "after" not in log and "Input filename:" in log


def test_current_gpu_without_a_gpu_fails_with_the_library_text(
        tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"], use_gpu=True)
    assert_failed(build(req), req, "CUDA driver version is insufficient for CUDA runtime version")


def test_weightless_without_a_gpu_fails_cleanly(tmp_path: Path, models: dict[str, Path]) -> None:
    req = request(tmp_path, models["conv"], weightless=True)
    result = build(req)
    assert_failed(result, req, "IBuilder::buildSerializedNetwork: Error Code 1: Myelin")


@pytest.mark.parametrize("content", [None, b"not an onnx model at all"])
def test_unreadable_model_fails_with_the_parser_text(tmp_path: Path, content: bytes | None) -> None:
    model = tmp_path / "bad.onnx"
    if content is not None:
        model.write_bytes(content)
    req = request(tmp_path, model)
    result = build(req)
    assert_failed(result, req, "cannot parse ONNX model: ")
    expected = "Failed to parse the ONNX model" if content else "Input file cannot be found"
    assert expected in (result.error or "")


def test_unwritable_engine_folder_fails_without_traceback(tmp_path: Path,
                                                          models: dict[str, Path]) -> None:
    (tmp_path / "engines").write_text("a file where the folder should be")
    req = request(tmp_path, models["conv"], log_path=str(tmp_path / "cell.log"))
    result = build(req)
    assert not result.ok
    assert result.error is not None and result.error.startswith("FileExistsError: ")


def test_unwritable_log_fails_the_cell(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "logs").write_text("a file where the folder should be")
    req = request(tmp_path, models["conv"], log_path=str(tmp_path / "logs" / "cell.log"))
    result = build(req)
    assert not result.ok
    assert result.error is not None and result.error.startswith("cannot write build log: ")
    assert not Path(req.engine_path).exists()


def test_each_build_in_one_process_logs_to_its_own_file(tmp_path: Path,
                                                        models: dict[str, Path]) -> None:
    # The library keeps the first logger while any builder lives: workers build many cells.
    first = request(tmp_path, models["conv"], name="first")
    second = request(tmp_path, models["mlp"], name="second", ccs=("sm75",))
    assert build(first).ok
    result = build(second)
    assert result.error and "FP32 GEMM is not supported" in result.error
    assert str(models["conv"]) in Path(first.log_path).read_text()
    second_log = Path(second.log_path).read_text()
    assert str(models["mlp"]) in second_log and str(models["conv"]) not in second_log
