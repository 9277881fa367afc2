"""The plan against the real builder, cell by cell, on a corpus no rule was written from alone.

Two corpora, each model x `default, sm75, sm80, sm86, sm89, sm120`:
- generated: every dtype, operator family, quantization form and IO placement that
  docs/tensorrt-rtx.md names, and the nearest forms that build (tests/modelgen.py);
- quantizers (when onnxruntime, onnxconverter-common and rapidocr-onnxruntime are installed:
  `pip install -e '.[corpus]'`): the PP-OCR detector, recognizer and classifier shipped by
  rapidocr-onnxruntime, at fixed input shapes, through onnxruntime's QDQ (several signedness,
  symmetry and per-channel settings, bias kept or quantized), QOperator and dynamic
  quantization, FP8, INT4/UINT4 weights, MatMulNBits, and onnxconverter-common's FP16.

`rtx-matrix plan` (a real CLI run, cold then warm) judges every cell; each model is then built
for every target with the bare library in child processes. Printed: agreement, false
rejections (the plan said rejected, the library built: must be 0) and misses (the plan said
build, the library refused), each with the builder's error. Also the cost of the plan: cold
(facts and the parser pass for new models) and warm.

    python bench/bench_plan_vs_builder.py [--work DIR] [--jobs 2] [--no-quantizers]

Builds are cached in DIR (by model digest, target and library version), so a second run only
plans; models are regenerated each run (generation is deterministic).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnx import TensorProto as T  # noqa: E402

from matrix.versions import installed_tensorrt_rtx  # noqa: E402
from tests import modelgen as mg  # noqa: E402

TARGETS = ("default", "sm75", "sm80", "sm86", "sm89", "sm120")
Make = Callable[[Path], Path]


# --- the generated corpus --------------------------------------------------------------------


def generated() -> dict[str, Make]:
    models: dict[str, Make] = {
        "mlp-fp32": mg.mlp_fp32,
        "matmul-fp16": mg.matmul_fp16,
        "conv-fp32": mg.conv_fp32,
        "conv-fp16": mg.conv_fp16,
        "matmul-bf16": mg.matmul_bf16,
        "qdq-fp8-matmul": mg.fp8_qdq_matmul,
        "fp4-block-matmul": mg.fp4_weights_matmul,
        "int4-block-matmul": mg.int4_weights_matmul,
        "qdq-int8-conv": mg.int8_qdq_conv,
        "qdq-int8-matmul": mg.int8_qdq_matmul,
        "if": mg.if_model,
        "attention": mg.unfused_attention,
        "matmul-in-fp16-casts": mg.fp32_matmul_in_fp16_casts,
        "shape-matmul": mg.shape_matmul,
        "mixed-matmul": mg.mixed_matmul,
    }
    for elem, tag in ((T.FLOAT, "fp32"), (T.FLOAT16, "fp16"), (T.DOUBLE, "fp64")):
        models[f"conv3d-{tag}"] = partial(mg.conv3d, elem=elem)
        models[f"deconv3d-{tag}"] = partial(mg.conv3d, elem=elem, transpose=True)
        models[f"matmul-{tag}"] = partial(mg.matmul, elem=elem)
        for equation, kind in (("ij,jk->ik", "contract"), ("ij->ji", "transpose")):
            models[f"einsum-{kind}-{tag}"] = partial(mg.einsum, equation=equation, elem=elem)
    for op in ("LSTM", "GRU", "RNN"):
        for elem, tag in ((T.FLOAT, "fp32"), (T.FLOAT16, "fp16")):
            models[f"{op.lower()}-{tag}"] = partial(mg.recurrent, op=op, elem=elem)
    for name in (
        "INT8", "UINT8", "INT16", "UINT16", "INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1",
        "FLOAT8E4M3FN", "FLOAT8E5M2", "FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
    ):  # fmt: skip
        models[f"dq-weights-{name.lower()}"] = partial(mg.dq_weights_matmul, elem=getattr(T, name))
    for name in ("FLOAT8E4M3FN", "FLOAT4E2M1", "INT4", "INT8", "BFLOAT16"):
        models[f"cast-out-{name.lower()}"] = partial(mg.cast_output, elem=getattr(T, name))
    for name in ("FLOAT8E4M3FN", "FLOAT4E2M1", "INT4", "INT8"):
        models[f"io-{name.lower()}"] = partial(mg.quantized_io, elem=getattr(T, name))
    for shape in ((), (1,)):
        models[f"int8-constant-rank{len(shape)}"] = partial(mg.dequantized_constant, shape=shape)
    for op in ("Transpose", "Identity"):
        models[f"int8-weights-via-{op.lower()}"] = partial(mg.quantized_weights_via, op=op)
    qdq: dict[str, dict[str, Any]] = {
        "symmetric": {},
        "zero-point": {"zero_point": 3},
        "uint8-act": {"act": T.UINT8},
        "uint8-act-zp128": {"act": T.UINT8, "zero_point": 128},
        "uint8-weights": {"weights": T.UINT8},
        "int4-weights": {"weights": T.INT4},
        "int32-bias": {"bias": "int32"},
        "negative-scale": {"scale": -0.01},
        "zero-scale": {"scale": 0.0},
    }
    for tag, options in qdq.items():
        models[f"qdq-conv-{tag}"] = partial(mg.qdq_conv, **options)
    for op in ("QLinearMatMul", "MatMulInteger", "MaxPool", "Add"):
        models[f"single-{op.lower()}"] = partial(mg.single_op, op=op)
    return models


# --- the quantizers' corpus ------------------------------------------------------------------

OCR = {  # rapidocr-onnxruntime's models, at fixed input shapes (no profiles needed)
    "det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 64, 64]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 160]),
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
}


def quantizer_outputs(folder: Path) -> Iterator[Path]:
    """Every variant the installed quantizers make; a variant a tool refuses is skipped."""
    try:
        import rapidocr_onnxruntime
        from onnxruntime.quantization import QuantFormat, QuantType  # noqa: F401
    except ImportError as error:
        print(f"quantizer corpus skipped ({error}): pip install -e '.[corpus]'")
        return
    source = Path(rapidocr_onnxruntime.__file__).parent / "models"
    sources: dict[str, tuple[Make, list[int]]] = {
        name: (partial(_fix_shape, source / file, shape), shape)
        for name, (file, shape) in OCR.items()
    }
    # The OCR models' MatMuls are not MatMulNBits material: a small MLP's are.
    sources["mlp64"] = (partial(mg.mlp_fp32, features=64), [1, 64])
    for name, (make_source, shape) in sources.items():
        fixed = folder / f"{name}-fp32.onnx"
        if not fixed.exists():
            make_source(fixed)
        yield fixed
        for label, make in _variants(fixed, shape).items():
            out = folder / f"{name}-{label}.onnx"
            if not out.exists():
                try:
                    with _quiet():
                        make(out)
                except Exception as error:  # the tool's refusal, not ours
                    print(f"  {out.name}: not made ({type(error).__name__}: {error})"[:160])
                    continue
            yield out


def _fix_shape(source: Path, shape: list[int], out: Path) -> Path:
    import onnx

    model = onnx.load(str(source))
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.ClearField("dim_param")
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model), str(out))
    return out


def _variants(fixed: Path, shape: list[int]) -> dict[str, Make]:
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    input_name = onnx.load(str(fixed), load_external_data=False).graph.input[0].name
    pre = fixed.with_name(fixed.stem.replace("-fp32", "-pre") + ".onnx")
    if not pre.exists():
        with _quiet():
            quant_pre_process(str(fixed), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{input_name: rng.random(shape, dtype=np.float32)} for _ in range(2)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    def static(out: Path, **options: Any) -> None:
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, **options)

    u8, i8 = QuantType.QUInt8, QuantType.QInt8
    symmetric = {"ActivationSymmetric": True, "WeightSymmetric": True}
    variants: dict[str, Make] = {
        "qdq-default": partial(static),  # onnxruntime's defaults: UINT8, asymmetric
        "qdq-u8-i8-pc": partial(static, activation_type=u8, weight_type=i8, per_channel=True),
        "qdq-i8-sym": partial(static, activation_type=i8, weight_type=i8, extra_options=symmetric),
        "qdq-i8-sym-pc": partial(
            static, activation_type=i8, weight_type=i8, per_channel=True, extra_options=symmetric
        ),
        "qdq-i8-sym-pc-nobias": partial(
            static,
            activation_type=i8,
            weight_type=i8,
            per_channel=True,
            extra_options={**symmetric, "QuantizeBias": False},
        ),
        "qdq-u8-sym-pc": partial(
            static, activation_type=u8, weight_type=u8, per_channel=True, extra_options=symmetric
        ),
        "qoperator-i8": partial(_qoperator, pre, Reader),
        "dynamic-i8": lambda out: quantize_dynamic(str(pre), str(out), weight_type=i8),
    }
    for bias in (True, False):
        variants["qdq-fp8" + ("" if bias else "-nobias")] = partial(
            static,
            activation_type=QuantType.QFLOAT8E4M3FN,
            weight_type=QuantType.QFLOAT8E4M3FN,
            calibrate_method=CalibrationMethod.Distribution,
            extra_options={**symmetric, "QuantizeBias": bias},
        )
    for weights in (QuantType.QInt4, QuantType.QUInt4):
        for act in (i8, u8):
            label = f"qdq-w{weights.name[1:].lower()}-a{act.name[1:].lower()}"
            variants[label] = partial(
                static, activation_type=act, weight_type=weights, per_channel=True,
                extra_options=symmetric,
            )  # fmt: skip
    for fmt, sym in (
        (QuantFormat.QOperator, True),
        (QuantFormat.QDQ, True),
        (QuantFormat.QDQ, False),
    ):
        label = f"nbits-{'qdq' if fmt == QuantFormat.QDQ else 'qop'}-{'sym' if sym else 'asym'}"
        variants[label] = partial(_nbits, fixed, fmt, sym)
    for label, options in (
        ("fp16", {}),
        ("fp16-keepio", {"keep_io_types": True}),
        ("fp16-conv-kept", {"keep_io_types": True, "op_block_list": ["Conv"]}),
    ):
        variants[label] = partial(_fp16, fixed, options)
    return variants


def _qoperator(pre: Path, reader: Callable[[], Any], out: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    i8 = QuantType.QInt8
    quantize_static(
        str(pre), str(out), reader(), quant_format=QuantFormat.QOperator, activation_type=i8,
        weight_type=i8,
    )  # fmt: skip


def _nbits(fixed: Path, fmt: Any, symmetric: bool, out: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=16, is_symmetric=symmetric, quant_format=fmt)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fixed)), algo_config=config)
    quantizer.process()
    if not any(n.op_type in ("MatMulNBits", "DequantizeLinear") for n in quantizer.model.nodes()):
        raise ValueError("no MatMul to quantize")
    quantizer.model.save_model_to_file(str(out))


def _fp16(fixed: Path, options: dict[str, Any], out: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(str(fixed)), **options), str(out))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizers warn by the hundred through `logging`, `warnings` and print."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    try:
        with (
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# --- planning and building -------------------------------------------------------------------


def write_manifest(folder: Path, models: list[Path], name: str = "rtx-matrix.yaml") -> Path:
    lines = ["version: 1", "models:"]
    for path in models:
        lines.append(f"  - {{name: {path.stem}, onnx: {path}, targets: [{', '.join(TARGETS)}]}}")
    manifest = folder / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def plan(manifest: Path, cache: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "RTX_MATRIX_CACHE_DIR": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "matrix", "plan", str(manifest), "--json", "--skip-rejected"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,  # `-m matrix` imports the package of this checkout
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"plan failed: {done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout)


_BUILD_CHILD = r"""
import json, sys
import tensorrt_rtx as trt
class Log(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self); self.errors = []
    def log(self, severity, msg):
        if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
            self.errors.append(msg)
log = Log()
builder = trt.Builder(log)
network = builder.create_network(0)
parser = trt.OnnxParser(network, log)
targets = sys.argv[2].split(",")
if not parser.parse_from_file(sys.argv[1]):
    why = "parse: " + " | ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
    print(json.dumps({t: why for t in targets}))
    sys.exit()
for target in targets:
    log.errors.clear()
    config = builder.create_builder_config()
    if target != "default":
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), 0)
    engine = builder.build_serialized_network(network, config)
    print(json.dumps({target: "" if engine is not None else " | ".join(log.errors) or "failed"}))
    sys.stdout.flush()
"""


def build_all(paths: list[Path], results_file: Path, jobs: int) -> dict[str, dict[str, str]]:
    """{model stem: {target: "" when built, else the builder's error}}; cached by digest."""
    version = installed_tensorrt_rtx()
    cached: dict[str, str] = json.loads(results_file.read_text()) if results_file.exists() else {}
    keys = {p: f"{_digest(p)}:{version}" for p in paths}
    todo = [p for p in paths if any(f"{keys[p]}:{t}" not in cached for t in TARGETS)]
    print(f"building {len(todo)} models x {len(TARGETS)} targets ({len(paths) - len(todo)} cached)")
    done = 0
    with ThreadPoolExecutor(jobs) as pool:
        for path, outcome in zip(todo, pool.map(_build_model, todo), strict=True):
            cached.update({f"{keys[path]}:{t}": why for t, why in outcome.items()})
            done += 1
            if done % 10 == 0 or done == len(todo):
                print(f"  {done}/{len(todo)} built", flush=True)
                results_file.write_text(json.dumps(cached, indent=0, sort_keys=True))
    return {p.stem: {t: cached[f"{keys[p]}:{t}"] for t in TARGETS} for p in paths}


def _build_model(path: Path, targets: tuple[str, ...] = TARGETS) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_CHILD, str(path), ",".join(targets)],
        capture_output=True,
        text=True,
    )
    outcome: dict[str, str] = {}
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            outcome.update(json.loads(line))
    if done.returncode != 0 and len(targets) > 1:  # a crash: each target left, alone
        for target in targets:
            if target not in outcome:
                outcome.update(_build_model(path, (target,)))
    for target in targets:
        outcome.setdefault(target, f"the builder crashed (exit {done.returncode})")
    return outcome


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- comparing -------------------------------------------------------------------------------


def compare(label: str, paths: list[Path], planned: dict[str, Any], built: dict[str, Any]) -> int:
    """Print agreement, false rejections and misses for one corpus; the false rejections."""
    verdicts = {(c["model"], c["target"]): c for c in planned["cells"]}
    agree = false_rejections = misses = 0
    lines = []
    for path in paths:
        for target in TARGETS:
            cell = verdicts[(path.stem, target)]
            said_build = cell["verdict"] == "build"
            error = built[path.stem][target]
            if said_build == (error == ""):
                agree += 1
                continue
            rules = ",".join(r["rule"] for r in cell["reasons"] if r["severity"] == "error")
            if said_build:
                misses += 1
                lines.append(f"  MISS {cell['id']}: builder: {_short(error)}")
            else:
                false_rejections += 1
                lines.append(f"  FALSE REJECTION {cell['id']} [{rules}]")
    cells = len(paths) * len(TARGETS)
    print(
        f"{label}: {len(paths)} models, {cells} cells: agree {agree} ({100 * agree / cells:.1f}%), "
        f"false rejections {false_rejections}, misses {misses}"
    )
    print("\n".join(lines))
    return false_rejections


def _short(error: str) -> str:
    for marker in ("Cannot compile", "Error Code", "parse: "):
        if marker in error:
            error = error[error.index(marker) :]
            break
    return " ".join(error.split())[:200]


def rule_counts(planned: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for cell in planned["cells"]:
        for reason in cell["reasons"]:
            if reason["severity"] == "error":
                counts[reason["rule"]] = counts.get(reason["rule"], 0) + 1
    return ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items(), key=lambda i: -i[1]))


def plan_costs(work: Path, model: Path, runs: int) -> None:
    """Cold plan of a model never seen (facts + the parser pass) against the warm plan."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        colds, warms = [], []
        for run in range(runs):
            folder = Path(tmp) / f"run{run}"
            folder.mkdir()
            copy = folder / model.name
            shutil.copy(model, copy)
            manifest = write_manifest(folder, [copy])
            colds.append(plan(manifest, folder / "cache")[0])
            warms.extend(plan(manifest, folder / "cache")[0] for _ in range(3))
        size = model.stat().st_size / 1e6
        print(
            f"  {model.name} ({size:.1f} MB), {len(TARGETS)} cells: cold best "
            f"{min(colds):.2f} s, median {statistics.median(colds):.2f} s; warm best "
            f"{min(warms):.3f} s, median {statistics.median(warms):.3f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rtx-corpus")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-quantizers", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="cold plan runs (default 3)")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    (work / "generated").mkdir(parents=True, exist_ok=True)
    (work / "quantizers").mkdir(exist_ok=True)
    corpora: dict[str, list[Path]] = {
        "generated": [make(work / "generated" / f"{n}.onnx") for n, make in generated().items()]
    }
    if not args.no_quantizers:
        corpora["quantizers"] = list(quantizer_outputs(work / "quantizers"))
    everything = [p for paths in corpora.values() for p in paths]
    manifest = write_manifest(work, everything)
    shutil.rmtree(work / "cache", ignore_errors=True)
    cold, planned = plan(manifest, work / "cache")
    warm = min(plan(manifest, work / "cache")[0] for _ in range(3))
    cells = len(planned["cells"])
    print(
        f"plan of {len(everything)} models, {cells} cells: cold {cold:.2f} s (facts and "
        f"parser pass, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}), warm {warm:.3f} s"
    )
    print(f"rejected cells by rule: {rule_counts(planned)}")
    built = build_all(everything, work / "builds.json", args.jobs)
    false_rejections = sum(compare(n, paths, planned, built) for n, paths in corpora.items())
    total = sum(
        1
        for cell in planned["cells"]
        if (cell["verdict"] == "build") == (built[cell["model"]][cell["target"]] == "")
    )
    print(f"all: {cells} cells, agree {total} ({100 * total / cells:.1f}%)")
    print("cost of a plan with one new model:")
    small = work / "generated" / "conv3d-fp32.onnx"
    plan_costs(work, small, args.runs)
    rec = work / "quantizers" / "rec-fp16.onnx"
    if rec.exists():
        plan_costs(work, rec, args.runs)
    return 1 if false_rejections else 0


if __name__ == "__main__":
    sys.exit(main())
