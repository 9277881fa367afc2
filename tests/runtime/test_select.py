"""Selection, exhaustively: it is pure, so every family, model order, target kind, CC and
weightless case is a row of a table here, checked against the rule as the issue states it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from matrix.errors import GpuError, InputError
from matrix.gpu import Gpu
from matrix.plan.capabilities import CC, KNOWN
from matrix.runtime import select
from matrix.runtime.bundle import Bundle, BundleEngine, Family, bundle_to_json
from matrix.runtime.select import Fit

DEFAULT_RUNS_ON = ("sm80", "sm86", "sm89", "sm120", "sm121", "newer")
NEWER_CCS = (CC(12, 2), CC(13, 0))
SUPPORTED = (*KNOWN, *NEWER_CCS)
UNSUPPORTED = (CC(9, 0), CC(10, 0), CC(10, 3), CC(11, 0), CC(8, 7), CC(7, 0), CC(6, 1))
WHY = (
    "is not a TensorRT-RTX target: TensorRT-RTX builds and runs on RTX-class GPUs "
    "(CC 7.5, 8.0, 8.6, 8.9, 12.0, 12.1); on this GPU a 'current' build yields an engine "
    "that runs nowhere and weightless builds fail"
)


def engine(
    cell: str,
    built_for: tuple[str, ...] = (),
    runs_on: tuple[str, ...] | None = None,
    weightless: bool = False,
    model: str | None = None,
    family: str | None = None,
    targets: tuple[str, ...] | None = None,
) -> BundleEngine:
    model = model or cell.split("@")[0]
    return BundleEngine(
        cell=cell,
        model=model,
        family=family or model,
        path=f"engines/{cell}.engine",
        sha256="0" * 64,
        size=1,
        tensorrt_rtx="1.7.1.116",
        targets=built_for if targets is None else targets,
        built_for=built_for,
        runs_on=DEFAULT_RUNS_ON if runs_on is None and not built_for else runs_on or built_for,
        weightless=weightless,
        dtypes=("fp32",),
    )


def bundle(*engines: BundleEngine, families: tuple[Family, ...] | None = None) -> Bundle:
    if families is None:
        order: dict[str, list[str]] = {}
        for e in engines:
            if e.model not in order.setdefault(e.family, []):
                order[e.family].append(e.model)
        families = tuple(Family(name, tuple(models)) for name, models in order.items())
    return Bundle(Path("/b"), "0.1.0", "1.7.1.116", families, engines)


def chosen_cell(b: Bundle | Path, cc: CC, family: str = "m") -> str | None:
    choice = select(b, cc).chosen.get(family)
    return None if choice is None else choice.engine.cell


# ----------------------------------------------------------------- target kind × weightless

# The preference the issue states, best first: exactly this CC, then a set containing it,
# then default; at each, a full engine before a weightless one.
ORDER = ("exact", "exact+w", "set", "set+w", "default", "default+w")


def kinds_for(cc: CC) -> dict[str, BundleEngine]:
    """One engine of each kind that could run on `cc` (an exact or set build names it)."""
    other = "sm86" if cc.name != "sm86" else "sm89"
    made = {}
    for kind in ORDER:
        weightless = kind.endswith("+w")
        base = kind.removesuffix("+w")
        built = {"exact": (cc.name,), "set": tuple(sorted({cc.name, other})), "default": ()}[base]
        made[kind] = engine(f"m@{kind}", built, weightless=weightless)
    return made


@pytest.mark.parametrize("cc", SUPPORTED, ids=str)
@pytest.mark.parametrize(
    "present",
    [kinds for n in range(1, len(ORDER) + 1) for kinds in itertools.combinations(ORDER, n)],
    ids="/".join,
)
def test_every_mix_of_target_kinds_and_weightless(cc: CC, present: tuple[str, ...]) -> None:
    made = kinds_for(cc)
    engines = [made[kind] for kind in reversed(present)]  # listing order must not decide
    runs = [kind for kind in ORDER if kind in present and cc.name in made[kind].runs_on]
    if cc in NEWER_CCS:  # only a default build carries "newer GPUs"; exact/set name the CC
        runs = [kind for kind in ORDER if kind in present]
    if cc == CC(7, 5):  # the library's default never includes Turing
        runs = [kind for kind in runs if not kind.startswith("default")]
    expected = f"m@{runs[0]}" if runs else None
    assert chosen_cell(bundle(*engines), cc) == expected


@pytest.mark.parametrize(
    ("engines", "cc", "expected", "fit"),
    [
        # A narrowed default (an FP8 model) does not run below 8.9.
        ((engine("m@default", runs_on=("sm89", "sm120", "sm121", "newer")),), CC(8, 6), None, None),
        ((engine("m@default", runs_on=("sm89", "sm120", "sm121", "newer")),), CC(8, 9),
         "m@default", Fit.DEFAULT),
        # `current`, resolved when built, is an exact build for that GPU's CC.
        ((engine("m@current", ("sm89",), targets=("current",)), engine("m@default")), CC(8, 9),
         "m@current", Fit.EXACT),
        # A 12.2 GPU: only a default build ("newer GPUs") or a current build made on one.
        ((engine("m@sm120", ("sm120",)), engine("m@default")), CC(12, 2), "m@default",
         Fit.DEFAULT),
        ((engine("m@current", ("sm122",), targets=("current",)), engine("m@default")),
         CC(12, 2), "m@current", Fit.EXACT),
        # A set whose engine the planner narrowed: runs_on decides, not the CCs asked.
        ((engine("m@ampere", ("sm80", "sm89"), runs_on=("sm89",)),), CC(8, 0), None, None),
        # Two sets containing the CC: the manifest's first.
        ((engine("m@wide", ("sm80", "sm86", "sm89")), engine("m@narrow", ("sm86", "sm89"))),
         CC(8, 6), "m@wide", Fit.SET),
        # A weightless exact build beats a full default build: closeness of fit comes first.
        ((engine("m@default"), engine("m@sm86+weightless", ("sm86",), weightless=True)),
         CC(8, 6), "m@sm86+weightless", Fit.EXACT),
        # Turing: only what names sm75.
        ((engine("m@default"), engine("m@rtx", ("sm75", "sm86"))), CC(7, 5), "m@rtx", Fit.SET),
    ],
)
def test_target_kinds_in_particular(
    engines: tuple[BundleEngine, ...], cc: CC, expected: str | None, fit: Fit | None
) -> None:
    selection = select(bundle(*engines), cc)
    choice = selection.chosen.get("m")
    assert (choice.engine.cell if choice else None) == expected
    assert (choice.fit if choice else None) == fit
    assert ("m" in selection.missing) is (expected is None)


# ------------------------------------------------------------------ families and model order

FP8 = engine("det-fp8@default", runs_on=("sm89", "sm120", "sm121", "newer"), family="det")
FP8_RTX40 = engine("det-fp8@rtx40", ("sm89",), family="det")
FP16 = engine("det-fp16@default", family="det")
FP16_TURING = engine("det-fp16@sm75", ("sm75",), family="det")


@pytest.mark.parametrize(
    ("engines", "models", "cc", "expected", "passed_over"),
    [
        # The preferred FP8 export runs on Ada and newer; elsewhere the FP16 one steps in.
        ((FP8, FP16), ("det-fp8", "det-fp16"), CC(8, 9), "det-fp8@default", ()),
        ((FP8, FP16), ("det-fp8", "det-fp16"), CC(12, 0), "det-fp8@default", ()),
        ((FP8, FP16), ("det-fp8", "det-fp16"), CC(8, 6), "det-fp16@default", ("det-fp8",)),
        ((FP8, FP16), ("det-fp8", "det-fp16"), CC(8, 0), "det-fp16@default", ("det-fp8",)),
        # The first model that runs wins, even when a later one fits the CC more closely.
        ((FP8, FP16, FP16_TURING), ("det-fp8", "det-fp16"), CC(12, 0), "det-fp8@default", ()),
        ((FP16, FP8_RTX40), ("det-fp16", "det-fp8"), CC(8, 9), "det-fp16@default", ()),
        # Manifest order, not the order of the engines in the bundle, is the preference.
        ((FP16, FP8), ("det-fp8", "det-fp16"), CC(8, 9), "det-fp8@default", ()),
        ((FP8, FP16), ("det-fp16", "det-fp8"), CC(8, 9), "det-fp16@default", ()),
        # Turing: neither default runs; the sm75 build does.
        ((FP8, FP16, FP16_TURING), ("det-fp8", "det-fp16"), CC(7, 5), "det-fp16@sm75",
         ("det-fp8",)),
        ((FP8, FP16), ("det-fp8", "det-fp16"), CC(7, 5), None, ()),
        # A model listed in the family with no engine in the bundle is passed over.
        ((FP16,), ("det-fp8", "det-fp16"), CC(8, 9), "det-fp16@default", ("det-fp8",)),
    ],
)
def test_model_order_within_a_family(
    engines: tuple[BundleEngine, ...],
    models: tuple[str, ...],
    cc: CC,
    expected: str | None,
    passed_over: tuple[str, ...],
) -> None:
    b = bundle(*engines, families=(Family("det", models),))
    choice = select(b, cc).chosen.get("det")
    assert (choice.engine.cell if choice else None) == expected
    if choice:
        assert choice.passed_over == passed_over


def test_every_family_is_chosen_for_independently() -> None:
    b = bundle(
        FP8, FP16,
        engine("ocr@sm86", ("sm86",)),
        engine("ocr@default"),
        engine("cls@sm75", ("sm75",)),
        families=(Family("det", ("det-fp8", "det-fp16")), Family("ocr", ("ocr",)),
                  Family("cls", ("cls",))),
    )
    selection = select(b, "8.6")
    assert {f: c.engine.cell for f, c in selection.chosen.items()} == {
        "det": "det-fp16@default",
        "ocr": "ocr@sm86",
    }
    assert list(selection.chosen) == ["det", "ocr"]  # the bundle's family order
    assert dict(selection.missing) == {"cls": "no engine runs on CC 8.6 (its engines run on sm75)"}
    turing = select(b, "7.5")
    assert list(turing.chosen) == ["cls"]
    assert turing.missing["det"] == (
        "no engine runs on CC 7.5 (its engines run on sm80 sm86 sm89 sm120 sm121 newer)"
    )


def test_a_family_without_engines_says_so() -> None:
    b = bundle(families=(Family("empty", ("a",)),))
    assert select(b, "8.6").missing["empty"] == "no engine runs on CC 8.6 (it has no engines)"


# ---------------------------------------------------------------------------------- CCs


@pytest.mark.parametrize("spelling", ["8.6", "sm86", "SM86", 86, 8.6, "kSM86", CC(8, 6)])
def test_every_cc_spelling_selects_alike(spelling: str | int | float | CC) -> None:
    assert select(bundle(engine("m@sm86", ("sm86",))), spelling).cc == CC(8, 6)


@pytest.mark.parametrize("cc", UNSUPPORTED, ids=str)
def test_gpus_tensorrt_rtx_does_not_support_are_refused_with_builds_line(cc: CC) -> None:
    with pytest.raises(GpuError) as refused:
        select(bundle(engine("m@default")), cc)
    assert str(refused.value) == f"CC {cc.dotted} {WHY}"
    assert refused.value.exit_code == 3


def test_a_refused_gpu_is_named_as_build_names_it() -> None:
    h100 = Gpu(0, "NVIDIA H100 80GB HBM3", CC(9, 0), 80 << 30)
    with pytest.raises(GpuError) as refused:
        select(bundle(engine("m@default")), h100)
    assert str(refused.value) == h100.refusal
    assert str(refused.value) == f"GPU 0 (NVIDIA H100 80GB HBM3, CC 9.0) {WHY}"


def test_a_gpu_selects_by_its_cc_and_is_kept() -> None:
    ada = Gpu(1, "NVIDIA GeForce RTX 4090", CC(8, 9), 24 << 30)
    selection = select(bundle(engine("m@default")), ada)
    assert selection.gpu == ada and selection.cc == CC(8, 9)
    assert selection.subject == "GPU 1 (NVIDIA GeForce RTX 4090, CC 8.9)"


def test_not_a_cc_is_bad_input() -> None:
    with pytest.raises(InputError, match="'ampere' is not a compute capability"):
        select(bundle(engine("m@default")), "ampere")


def test_a_bundle_folder_is_read_when_given_as_a_path(tmp_path: Path) -> None:
    b = bundle(engine("m@sm86", ("sm86",)), engine("m@default"))
    (tmp_path / "bundle.json").write_text(bundle_to_json(b), encoding="utf-8")
    assert chosen_cell(tmp_path, CC(8, 6)) == "m@sm86"
    assert json.loads((tmp_path / "bundle.json").read_text())["engines"][0]["cell"] == "m@sm86"
