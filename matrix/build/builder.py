"""Builds one engine with TensorRT-RTX. The only module that imports `tensorrt_rtx`.

`build` runs inside a worker process (`matrix.build.pools.posix`) and never raises for a build
problem: every failure comes back as `BuildResult(ok=False, error=<one line>)`, using the
library's own error text when it logged one. GPU builds use CUDA device 0 of the process:
the pool's environment (CUDA_VISIBLE_DEVICES) picks the GPU, so `request.device` is not read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorrt_rtx as trt

from matrix.atomic import replace, start_writeback
from matrix.build import library_log
from matrix.build.engine_header import describe_mask, read_header, version_tuple
from matrix.build.messages import WRITING, BuildRequest, BuildResult, ProgressEvent, one_line
from matrix.build.temp_files import temp_path
from matrix.lockfile.types import TensorSpec
from matrix.manifest.types import BuilderOptions, Profile, ValueRange

ProgressCallback = Callable[[ProgressEvent], None]

_CHUNK = 16 << 20
"""Bytes written between two progress events and writeback requests."""
_HASH_BESIDE = 16 << 20
"""Engines from this size on are hashed in a thread beside the write (below, a thread costs
more than it saves)."""
SERIALIZING = "Serializing engine"
_DTYPES = {"FLOAT": "fp32", "HALF": "fp16", "BF16": "bf16", "FP8": "fp8", "FP4": "fp4",
           "INT4": "int4", "INT8": "int8"}
"""tensorrt_rtx.DataType names -> the canonical names of `matrix.facts.types`."""
_TILING = {
    "none": "NONE",
    "fast": "FAST",
    "moderate": "MODERATE",
    "full": "FULL",
}


class BuildError(Exception):
    """A cell failed; the message is the one line the summary shows."""


def build(request: BuildRequest, on_progress: ProgressCallback | None = None) -> BuildResult:
    """Build `request` into `request.engine_path`; never leaves a partial or temp file."""
    emit = _safe(on_progress)
    started = time.monotonic()
    emit(ProgressEvent(cell_id=request.cell_id, kind="start", pid=os.getpid()))
    try:
        with _BuildLog(request.log_path) as log:
            try:
                built = _build_engine(request, log, emit)
            except BuildError as error:
                log.note(f"FAILED: {error}")
                return _failed(request, started, str(error))
            except Exception as error:  # a library binding raising is still one cell's failure
                log.note(f"FAILED: {type(error).__name__}: {error}")
                return _failed(request, started, one_line(f"{type(error).__name__}: {error}"))
    except OSError as error:  # the log itself could not be written
        return _failed(request, started, one_line(f"cannot write build log: {error}"))
    finally:
        emit(ProgressEvent(cell_id=request.cell_id, kind="end", pid=os.getpid()))
    return BuildResult(cell_id=request.cell_id, ok=True, seconds=time.monotonic() - started,
                       sha256=built.sha256, size=built.size, header_mask=built.mask,
                       io=built.io, weights_bytes=built.weights_bytes,
                       stripped_weights_bytes=built.stripped_weights_bytes)


@dataclass(frozen=True)
class _Built:
    sha256: str
    size: int
    mask: int
    io: tuple[TensorSpec, ...]
    weights_bytes: int | None
    stripped_weights_bytes: int | None


def library_version() -> str:
    return str(trt.__version__)


def _failed(request: BuildRequest, started: float, error: str) -> BuildResult:
    return BuildResult(cell_id=request.cell_id, ok=False, seconds=time.monotonic() - started,
                       error=error)


def _build_engine(request: BuildRequest, log: _BuildLog, emit: ProgressCallback) -> _Built:
    io, engine = _serialized_engine(request, log, emit)
    # The builder, network and parser are gone with `_serialized_engine`'s frame: the weights
    # they held (the parser maps the external data) are released before the engine is written.
    sha256, size, mask = _write_engine(request, engine, emit)
    stripped = _stripped_weights(engine, log) if request.weightless else None
    return _Built(sha256, size, mask, io, log.weights_bytes, stripped)


def _serialized_engine(
    request: BuildRequest, log: _BuildLog, emit: ProgressCallback
) -> tuple[tuple[TensorSpec, ...], memoryview]:
    """The network's I/O tensors and the serialized engine."""
    builder = trt.Builder(_LIBRARY_LOG)
    network = builder.create_network(0)
    # The parser reads external data relative to the model's folder, so it gets the path.
    parser = trt.OnnxParser(network, _LIBRARY_LOG)
    if not parser.parse_from_file(request.onnx):
        raise BuildError(_parser_error(parser, log))
    config = builder.create_builder_config()
    _set_targets(config, request, log)
    _set_weightless(config, request.weightless)
    _set_profiles(builder, network, config, request.profiles, log)
    _set_options(config, request.options, log)
    config.progress_monitor = _Progress(request.cell_id, emit)
    io = _network_io(network)
    # Not `build_serialized_network_to_stream`: in 1.7.1 it serializes the whole engine in
    # memory too, then hands it over in 64 MiB copies, so the peak is the same and the
    # copies cost time (docs/tensorrt-rtx.md, "Memory of a build").
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise BuildError(log.last_error or "the builder returned no engine and logged no error")
    return io, memoryview(blob)


def _network_io(network: Any) -> tuple[TensorSpec, ...]:
    """The I/O tensors as the parsed network declares them: on a CPU-only host the built
    engine cannot be deserialized to ask it (docs/tensorrt-rtx.md, "Engine facts")."""
    tensors = [("input", network.get_input(i)) for i in range(network.num_inputs)]
    tensors += [("output", network.get_output(i)) for i in range(network.num_outputs)]
    return tuple(
        TensorSpec(tensor.name, mode, _dtype_name(tensor.dtype), tuple(map(int, tensor.shape)))
        for mode, tensor in tensors
    )


def _dtype_name(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype))
    return _DTYPES.get(name, name.lower())


def _stripped_weights(engine: memoryview, log: _BuildLog) -> int | None:
    """Bytes of the weights a weightless engine left out, as its engine statistics say.

    Weightless builds run on a GPU, but the engine loads only where it runs (one CC): on
    another GPU the size stays unknown, which the log says. Never fails the cell.
    """
    try:
        runtime = trt.Runtime(_LIBRARY_LOG)
        loaded = runtime.deserialize_cuda_engine(engine)
        if loaded is None:
            log.note("the engine does not load on this GPU: stripped weight size not recorded")
            return None
        return int(loaded.get_engine_stat(trt.EngineStat.STRIPPED_WEIGHTS_SIZE))
    except Exception as error:  # a statistic is not worth a failed cell
        log.note(f"stripped weight size not recorded: {type(error).__name__}: {error}")
        return None


def _parser_error(parser: Any, log: _BuildLog) -> str:
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    text = "; ".join(errors) or log.last_error or "the ONNX parser failed without a message"
    return one_line(f"cannot parse ONNX model: {text}")


def _set_targets(config: Any, request: BuildRequest, log: _BuildLog) -> None:
    """Count first, then each CC: set out of order, the library falls back to its default."""
    if request.use_gpu:
        if request.ccs:
            raise BuildError("a build for the current GPU cannot name other targets")
        members = [trt.ComputeCapability.CURRENT]
    else:
        members = [_cc_member(cc) for cc in request.ccs]
    if not members:
        return
    config.num_compute_capabilities = len(members)
    for index, member in enumerate(members):
        if not config.set_compute_capability(member, index):
            raise BuildError(log.last_error or f"TensorRT-RTX refused target {member.name}")


def _cc_member(cc: str) -> Any:
    member = getattr(trt.ComputeCapability, cc.upper(), None)
    if member is None or cc.upper() in ("CURRENT", "NONE"):
        raise BuildError(f"TensorRT-RTX {library_version()} has no target {cc}")
    return member


def _set_weightless(config: Any, weightless: bool) -> None:
    # As the TensorRT-RTX guide shows ("CPU-Only AOT and TensorRT-RTX Engines", building a
    # weightless engine; "Refitting Engines", table 5: "Weightless engine (kSTRIP_PLAN +
    # kREFIT)"): kSTRIP_PLAN leaves the refittable weights out, kREFIT lets IRefitter or
    # IParserRefitter (from the same ONNX) put them back on the user's machine.
    # https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/cpu-engines.html
    # https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/refitting-engines.html
    # It needs a GPU at build time: on a CPU-only host the library fails (a Myelin CUDA check).
    if weightless:
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
        config.set_flag(trt.BuilderFlag.REFIT)


def _set_profiles(builder: Any, network: Any, config: Any, profiles: tuple[Profile, ...],
                  log: _BuildLog) -> None:
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for number, profile in enumerate(profiles, start=1):
        optimization_profile = builder.create_optimization_profile()
        for shape in profile.shapes:
            if shape.input not in inputs:
                raise BuildError(f"profile {number} names input {shape.input!r}, which the "
                                 f"network does not have (it has {', '.join(sorted(inputs))})")
            if shape.has_dims:
                optimization_profile.set_shape(shape.input, shape.min, shape.opt, shape.max)
            if shape.values is not None:
                _set_shape_values(optimization_profile, shape.input, shape.values, number)
        if config.add_optimization_profile(optimization_profile) < 0:
            raise BuildError(log.last_error or f"TensorRT-RTX refused optimization profile "
                             f"{number}")


def _set_shape_values(optimization_profile: Any, name: str, values: ValueRange,
                      number: int) -> None:
    """A shape input's values (docs/profiles.md). The library raises on values it refuses; its
    last logged error is then a CUDA one on a CPU-only host, so the exception's text is used."""
    try:
        optimization_profile.set_shape_input(name, values.min, values.opt, values.max)
    except (RuntimeError, TypeError, ValueError) as error:
        raise BuildError(f"TensorRT-RTX refused the values of input {name!r} in profile "
                         f"{number}: {one_line(str(error))}") from error


def _set_options(config: Any, options: BuilderOptions, log: _BuildLog) -> None:
    """Only options TensorRT-RTX honours (the others are no-ops there: docs/tensorrt-rtx.md)."""
    if options.optimization_level is not None:
        _set_attribute(config, "builder_optimization_level", options.optimization_level,
                       "optimization_level", log)
    if options.tiling_optimization_level is not None:
        _set_attribute(config, "tiling_optimization_level",
                       _tiling(options.tiling_optimization_level), "tiling_optimization_level",
                       log)
    if options.max_aux_streams is not None:
        _set_attribute(config, "max_aux_streams", options.max_aux_streams, "max_aux_streams",
                       log)
    if options.workspace_bytes is not None:
        _call_setter(lambda: config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                                          options.workspace_bytes),
                     "workspace_bytes", options.workspace_bytes)


def _set_attribute(config: Any, attribute: str, value: Any, option: str,
                   log: _BuildLog) -> None:
    """Set and read back: out-of-range values are clamped or only logged, never raised."""
    _call_setter(lambda: setattr(config, attribute, value), option, value)
    kept = getattr(config, attribute)
    if kept != value:
        raise BuildError(log.last_error or f"TensorRT-RTX refused {option} "
                         f"{getattr(value, 'name', value)} (it kept "
                         f"{getattr(kept, 'name', kept)})")


def _call_setter(setter: Callable[[], object], option: str, value: object) -> None:
    try:
        setter()
    except (TypeError, ValueError, OverflowError) as error:  # pybind11 refusing the type
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if "incompatible function arguments" in reason:
            reason = "TensorRT-RTX does not accept this value"
        raise BuildError(f"invalid builder option {option}={value}: {reason}") from error


def _tiling(level: str) -> Any:
    name = _TILING.get(level.lower())
    if name is None:
        raise BuildError(f"unknown tiling_optimization_level {level!r} "
                         f"(one of {', '.join(_TILING)})")
    return getattr(trt.TilingOptimizationLevel, name)


# --- writing ------------------------------------------------------------------------------


def _write_engine(request: BuildRequest, blob: memoryview,
                  emit: ProgressCallback) -> tuple[str, int, int]:
    final = Path(request.engine_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(final)
    size = len(blob)

    def written(done: int) -> None:
        emit(ProgressEvent(cell_id=request.cell_id, kind="write", phase=WRITING, step=done,
                           steps=size, pid=os.getpid()))

    # Not `matrix.atomic.write_atomic`: the header is checked between write and rename. No
    # fsync here: the parent makes the engine durable before a lock names it (executor's
    # `_record`), while this worker already builds the next cell.
    try:
        # O_BINARY: on Windows a text-mode fd would turn every 0x0A byte into 0x0D 0x0A.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags, 0o666)
        try:
            sha256 = _write_hashed(fd, blob, written)
        finally:
            os.close(fd)
        mask = _check_header(temp, request)
        replace(temp, final)  # waits a moment for a reader of the old engine (Windows)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return sha256, size, mask


def _write_hashed(fd: int, blob: memoryview, written: Callable[[int], None]) -> str:
    """Write `blob` to `fd` and hash it in the same pass (bench/bench_large.py).

    A big engine is hashed by a second thread while this one writes (hashlib lets go of the
    GIL), so on a machine with a core to spare the hash costs no wall time; and each chunk
    is handed to the disk as soon as it is written, so the parent's fsync finds little left
    to wait for.
    """
    digest = hashlib.sha256()
    hasher = None
    if len(blob) >= _HASH_BESIDE:
        hasher = threading.Thread(target=digest.update, args=(blob,), name="rtx-matrix-hash")
        hasher.start()
    else:
        digest.update(blob)
    try:
        for start in range(0, len(blob), _CHUNK):
            chunk = blob[start:start + _CHUNK]
            while chunk:
                chunk = chunk[os.write(fd, chunk):]
            end = min(start + _CHUNK, len(blob))
            start_writeback(fd, start, end - start)
            written(end)
    finally:
        if hasher is not None:
            hasher.join()
    return digest.hexdigest()


def _check_header(temp: Path, request: BuildRequest) -> int:
    """The engine on disk must be this library's and target what the plan asked."""
    try:
        header = read_header(temp)
    except ValueError as error:
        raise BuildError(f"engine header unreadable: {error}") from error
    if header.version != version_tuple(library_version()):
        raise BuildError(f"engine header says TensorRT-RTX {header.version_text}, but "
                         f"{library_version()} built it")
    expected = request.expected_mask
    if expected is not None and header.mask != expected:
        raise BuildError(f"engine header targets {' '.join(describe_mask(header.mask))}, but "
                         f"{' '.join(describe_mask(expected)) or 'nothing'} was asked")
    return header.mask


# --- library callbacks --------------------------------------------------------------------


_LIBRARY_LOG = trt.Logger(trt.Logger.INFO)
"""The library's own logger, from INFO up, printing to stdout, which `_BuildLog` points at the
cell's log file during a build. Not a Python `ILogger`: that is called for every message,
VERBOSE too (~5,000 per small build, 99.5 % of them), each a call into Python that cost
1-2 % of the build time (bench/bench_overhead.py); this one filters them out in C++."""


class _BuildLog:
    """The cell's log file, and the process's stdout pointed at it while the library builds.

    Each library message is written out when logged, so a worker killed mid-build still
    leaves everything up to that moment. One build at a time per process: stdout is shared.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._fd = -1
        self._stdout = -1

    def __enter__(self) -> _BuildLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        self._fd = os.open(self.path, flags, 0o666)
        if sys.stdout is not None:
            sys.stdout.flush()  # what Python printed before belongs where it was headed
        self._stdout = os.dup(1)
        os.dup2(self._fd, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._stdout, 1)
        os.close(self._stdout)
        os.close(self._fd)

    @property
    def last_error(self) -> str | None:
        """The last error the library logged in this build, as one line."""
        return library_log.last_error(str(self.path))

    @property
    def weights_bytes(self) -> int | None:
        return library_log.weights_bytes(str(self.path))

    def note(self, line: str) -> None:
        # Never raise into the build: a full disk loses log lines, not the cell.
        with contextlib.suppress(OSError):
            os.write(self._fd, f"{line}\n".encode())


class _Progress(trt.IProgressMonitor):  # type: ignore[misc]
    """Forwards the builder's phases and steps as ProgressEvents.

    A phase start is `kind="phase", step=0`; its finish `kind="phase", step=steps`; each
    finished step `kind="step", step=<steps done>`. Once the outermost phase ends, the library
    serializes the engine (seconds for gigabytes of weights, with no phase of its own): that
    shows as the phase `SERIALIZING`. Never cancels the build.
    """

    def __init__(self, cell_id: str, emit: ProgressCallback) -> None:
        trt.IProgressMonitor.__init__(self)
        self.cell_id = cell_id
        self.emit = emit
        self.steps: dict[str, int] = {}
        self.outermost: str | None = None

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        if parent_phase is None and self.outermost is None:
            self.outermost = phase_name
        self.steps[phase_name] = num_steps
        self._send("phase", phase_name, 0)

    def step_complete(self, phase_name: str, step: int) -> bool:
        self._send("step", phase_name, step + 1)
        return True

    def phase_finish(self, phase_name: str) -> None:
        self._send("phase", phase_name, self.steps.pop(phase_name, 0))
        if phase_name == self.outermost:
            self._send("phase", SERIALIZING, 0)

    def _send(self, kind: str, phase: str, step: int) -> None:
        self.emit(ProgressEvent(cell_id=self.cell_id, kind=kind, phase=phase, step=step,
                                steps=self.steps.get(phase, step), pid=os.getpid()))


def _safe(callback: ProgressCallback | None) -> ProgressCallback:
    """Progress is best effort: an exception must never cross back into the C++ builder."""

    def emit(event: ProgressEvent) -> None:
        if callback is None:
            return
        with contextlib.suppress(Exception):
            callback(event)

    return emit
