"""Expand a manifest into the build matrix and judge every cell. Pure: no builds, no writes."""

from __future__ import annotations

import re
from collections.abc import Mapping

from matrix.facts.types import ModelFacts, NodeFinding, ParserError
from matrix.manifest.types import InputShape, Manifest, Model, Target
from matrix.plan import rules as R
from matrix.plan.capabilities import CC, NEWER, mask_of
from matrix.plan.rules import RULES_1_7, RuleSet
from matrix.plan.types import Cell, Plan, Reason, Severity, Verdict, cell_id


def make_plan(
    manifest: Manifest,
    facts: Mapping[str, ModelFacts],
    rules: RuleSet = RULES_1_7,
    current: CC | None = None,
) -> Plan:
    """Every model × target × weightless cell, in manifest order, with its verdict.

    `current` is the CC of the building GPU when known: `current` cells are then judged like
    an explicit CC. Without it they are judged on what can be known before a GPU is found.
    """
    cells = tuple(
        make_cell(manifest, model, target, weightless, facts[model.name], rules, current)
        for model in manifest.models
        for target in model.targets
        for weightless in model.weightless
    )
    return Plan(manifest=manifest, cells=cells, facts=facts, tensorrt_rtx=rules.tensorrt_rtx)


def make_cell(
    manifest: Manifest,
    model: Model,
    target: Target,
    weightless: bool,
    facts: ModelFacts,
    rules: RuleSet,
    current: CC | None,
) -> Cell:
    ident = cell_id(model.name, target.name, weightless)
    for index, exclusion in enumerate(manifest.exclude):
        if exclusion.matches(model.name, target.name, weightless):
            reason = Reason(R.EXCLUDED, f"excluded by exclude[{index}]", Severity.INFO)
            return Cell(ident, model, target, weightless, Verdict.EXCLUDED, (reason,), (), False)

    reasons = judge(model, target, weightless, facts, rules, current)
    needs_gpu = target.current or weightless
    if any(r.severity is Severity.ERROR for r in reasons):
        verdict = Verdict.REJECTED
    else:
        verdict = Verdict.NEEDS_GPU if needs_gpu else Verdict.BUILD
    runs_on = runs_on_of(target, facts, rules, current)
    return Cell(ident, model, target, weightless, verdict, reasons, runs_on, needs_gpu)


def judge(
    model: Model,
    target: Target,
    weightless: bool,
    facts: ModelFacts,
    rules: RuleSet,
    current: CC | None,
) -> tuple[Reason, ...]:
    """Every rule's say on one cell: errors reject it, warnings and notes explain it."""
    ccs = explicit_ccs(target, current)
    return (
        *current_reasons(target),
        *weightless_reasons(target, weightless, rules),
        *model_reasons(facts, rules),
        *dtype_reasons(target, ccs, facts, rules),
        *node_reasons(ccs, facts, rules),
        *turing_mixed_reasons(ccs, rules),
        *profile_reasons(model, facts),
    )


def explicit_ccs(target: Target, current: CC | None) -> tuple[CC, ...]:
    """The CCs the engine is built for, when they are known before building."""
    if target.current and not target.ccs:
        return (current,) if current is not None else ()
    return target.ccs


def current_reasons(target: Target) -> tuple[Reason, ...]:
    if not target.current:
        return ()
    if target.ccs:
        others = ", ".join(cc.name for cc in target.ccs)
        return (
            Reason(
                R.CURRENT_ALONE,
                f"'current' must be the only target of a build, but {target.name} also lists "
                f"{others}",
                Severity.ERROR,
            ),
        )
    return (
        Reason(
            R.CURRENT_NEEDS_GPU,
            "builds for the GPU of the building machine: needs a TensorRT-RTX GPU",
            Severity.INFO,
        ),
    )


def weightless_reasons(target: Target, weightless: bool, rules: RuleSet) -> tuple[Reason, ...]:
    if not weightless:
        return ()
    count = len(target.ccs) + target.current
    if count > rules.weightless_max_ccs:
        return (
            Reason(
                R.WEIGHTLESS_ONE_CC,
                f"a weightless build takes at most {rules.weightless_max_ccs} compute "
                f"capability, but {target.name} has {count}",
                Severity.ERROR,
            ),
        )
    return (
        Reason(
            R.WEIGHTLESS_NEEDS_GPU,
            "weightless (STRIP_PLAN + REFIT) builds need a TensorRT-RTX GPU",
            Severity.INFO,
        ),
    )


def required_cc(facts: ModelFacts, rules: RuleSet) -> tuple[CC, tuple[str, ...]] | None:
    """The lowest CC that can run every dtype of the model, with the dtypes that demand it."""
    table = rules.dtype_min_cc
    needs = {dtype: table[dtype] for dtype in facts.dtypes if dtype in table}
    if not needs:
        return None
    highest = max(needs.values())
    return highest, tuple(sorted(d for d, cc in needs.items() if cc == highest))


def dtype_reasons(
    target: Target, ccs: tuple[CC, ...], facts: ModelFacts, rules: RuleSet
) -> tuple[Reason, ...]:
    reasons: list[Reason] = []
    for dtype in sorted(facts.dtypes):
        minimum = rules.dtype_min_cc.get(dtype)
        if minimum is None:
            continue
        too_old = [cc.name for cc in ccs if cc < minimum]
        if too_old:
            label = rules.dtype_labels[dtype]
            reasons.append(
                Reason(
                    R.DTYPE_NEEDS,
                    f"the model uses {label}, which needs CC {minimum.dotted} or newer; "
                    f"{', '.join(too_old)} cannot run it",
                    Severity.ERROR,
                )
            )
    if target.is_default:
        required = required_cc(facts, rules)
        if required is not None:
            minimum, dtypes = required
            labels = "/".join(rules.dtype_labels[d] for d in dtypes)
            reasons.append(
                Reason(
                    R.DEFAULT_NARROWED,
                    f"the model uses {labels}: the default engine runs only on CC "
                    f"{minimum.dotted} and newer",
                    Severity.INFO,
                )
            )
    return tuple(reasons)


def model_reasons(facts: ModelFacts, rules: RuleSet) -> tuple[Reason, ...]:
    """What makes a model unbuildable on every target; the same for all its cells."""
    reasons: list[Reason] = []
    unsupported = sorted(
        rules.dtype_unsupported[d] for d in facts.dtypes & rules.dtype_unsupported.keys()
    )
    if unsupported:
        reasons.append(
            Reason(
                R.DTYPE_UNSUPPORTED,
                f"the model uses {', '.join(unsupported)}, which TensorRT-RTX cannot import on "
                "any target (of the 8-bit floats it reads FLOAT8E4M3FN only; of the 4-bit "
                "types INT4 and FLOAT4E2M1); re-quantize to a supported type",
                Severity.ERROR,
            )
        )
    if facts.parser is not None:
        named = {r.rule for r in reasons}
        for rule, errors in _parser_rules(facts.parser.errors, rules).items():
            if rule not in named:
                reasons.append(Reason(rule, _parser_message(rule, errors, rules), Severity.ERROR))
    return tuple(reasons)


def _parser_rules(errors: tuple[ParserError, ...], rules: RuleSet) -> dict[str, list[ParserError]]:
    by_rule: dict[str, list[ParserError]] = {}
    for error in errors:
        hint = next((h for h in rules.parser_hints if h.matches(error.op, error.message)), None)
        by_rule.setdefault(hint.rule if hint else R.PARSER_UNSUPPORTED, []).append(error)
    return by_rule


def _parser_message(rule: str, errors: list[ParserError], rules: RuleSet) -> str:
    first = errors[0]
    where = f"node {first.node!r} ({first.op})" if first.node else "the model"
    if first.op and not first.node:
        where = f"a {first.op} node"
    more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
    said = f"the TensorRT-RTX ONNX parser cannot import {where}{more}: {first.message}"
    hint = next((h for h in rules.parser_hints if h.rule == rule), None)
    return f"{hint.reason} ({said})" if hint else said


def node_reasons(ccs: tuple[CC, ...], facts: ModelFacts, rules: RuleSet) -> tuple[Reason, ...]:
    """Graph patterns the builder refuses: everywhere, or on some CCs."""
    reasons: list[Reason] = []
    by_rule: dict[str, tuple[str, list[NodeFinding], list[str]]] = {}
    for kind, node_rule in rules.node_rules.items():
        found = facts.found(kind)
        if not found:
            continue
        if node_rule.refused_on is None:
            refused = ["every target"]
        else:
            refused = [cc.name for cc in ccs if cc in node_rule.refused_on]
            if not refused:
                continue
        if node_rule.rule not in by_rule:
            by_rule[node_rule.rule] = (node_rule.reason, list(found), refused)
        else:
            by_rule[node_rule.rule][1].extend(found)
    for rule, (template, nodes, refused) in by_rule.items():
        first = nodes[0]
        more = f" (and {len(nodes) - 1} more)" if len(nodes) > 1 else ""
        message = template.format(
            node=first.node, op=first.op, detail=first.detail, more=more, ccs=", ".join(refused)
        )
        reasons.append(Reason(rule, message, Severity.ERROR))
    return tuple(reasons)


def turing_mixed_reasons(ccs: tuple[CC, ...], rules: RuleSet) -> tuple[Reason, ...]:
    alone_only = [cc.name for cc in ccs if cc in rules.fast_only_when_alone]
    if alone_only and len(ccs) > 1:
        return (
            Reason(
                R.TURING_MIXED,
                f"{', '.join(alone_only)} mixed with other targets: the engine is not "
                "guaranteed to be fast on Ampere and later; build Turing separately",
                Severity.WARNING,
            ),
        )
    return ()


def profile_reasons(model: Model, facts: ModelFacts) -> tuple[Reason, ...]:
    return (
        *dynamic_dims_reasons(model, facts),
        *shape_input_reasons(model, facts),
        *shared_dims_reasons(model, facts),
    )


def dynamic_dims_reasons(model: Model, facts: ModelFacts) -> tuple[Reason, ...]:
    dynamic = [t.name for t in facts.dynamic_inputs]
    if not dynamic:
        return ()
    if not model.profiles:
        return (
            Reason(
                R.DYNAMIC_NEEDS_PROFILE,
                f"input {_names(dynamic)} has dynamic dims and the model has no optimization "
                "profile; add `profiles:` with min/opt/max shapes",
                Severity.ERROR,
            ),
        )
    reasons = []
    for index, profile in enumerate(model.profiles):
        given = {s.input for s in profile.shapes if s.has_dims}
        missing = [n for n in dynamic if n not in given]
        if missing:
            reasons.append(
                Reason(
                    R.DYNAMIC_NEEDS_PROFILE,
                    f"profiles[{index}] gives no shapes for dynamic input {_names(missing)}",
                    Severity.ERROR,
                )
            )
    return tuple(reasons)


def shape_input_reasons(model: Model, facts: ModelFacts) -> tuple[Reason, ...]:
    """A shape input's values size the network: the library builds only when every profile
    gives their range (`set_shape_input`; docs/profiles.md)."""
    shape_inputs = list(facts.shape_inputs)
    if not shape_inputs:
        return ()
    if not model.profiles:
        return (
            Reason(
                R.SHAPE_INPUT_NEEDS_VALUES,
                f"input {_names(shape_inputs)} holds a shape (its values size the network) "
                f"and the model has no optimization profile; add `profiles:` with "
                f"{_values_syntax(shape_inputs[0])}",
                Severity.ERROR,
            ),
        )
    reasons = []
    for index, profile in enumerate(model.profiles):
        given = {s.input for s in profile.shapes if s.values is not None}
        missing = [n for n in shape_inputs if n not in given]
        if missing:
            reasons.append(
                Reason(
                    R.SHAPE_INPUT_NEEDS_VALUES,
                    f"profiles[{index}] gives no values for shape input {_names(missing)}; "
                    f"add {_values_syntax(missing[0])}",
                    Severity.ERROR,
                )
            )
    return tuple(reasons)


def _values_syntax(name: str) -> str:
    return f"`{name}: {{values: {{min: [...], opt: [...], max: [...]}}}}`"


_UNNAMED_DIM = re.compile(r"-[0-9]+")
"""Measured: a dim_param such as "-1" names nothing (such dims are not tied); "?", "unk__1",
"0" or "-" are names like any other (docs/profiles.md)."""


def shared_dims(facts: ModelFacts) -> dict[str, list[tuple[str, int]]]:
    """Dim name -> the (input, axis) places it stands, for names that stand in two or more."""
    places: dict[str, list[tuple[str, int]]] = {}
    for tensor in facts.inputs:
        for axis, dim in enumerate(tensor.shape):
            if isinstance(dim, str) and dim and not _UNNAMED_DIM.fullmatch(dim):
                places.setdefault(dim, []).append((tensor.name, axis))
    return {name: found for name, found in places.items() if len(found) > 1}


def shared_dims_reasons(model: Model, facts: ModelFacts) -> tuple[Reason, ...]:
    """Dims that share a name are one size to the library. Measured (docs/profiles.md): their
    min..max ranges must overlap, and unless they overlap in a single size their opt must be
    equal; the engine then accepts only the overlap."""
    shared = shared_dims(facts)
    if not shared:
        return ()
    reasons = []
    for index, profile in enumerate(model.profiles):
        dims = {s.input: s for s in profile.shapes if s.has_dims}
        for name, places in shared.items():
            given = [(p, dims[p[0]]) for p in places if p[0] in dims and p[1] < len(dims[p[0]].min)]
            if len(given) < 2:
                continue
            reason = _shared_dim_reason(index, name, given)
            if reason is not None:
                reasons.append(reason)
    return tuple(reasons)


def _shared_dim_reason(
    index: int, name: str, given: list[tuple[tuple[str, int], InputShape]]
) -> Reason | None:
    lows = [shape.min[axis] for (_, axis), shape in given]
    opts = [shape.opt[axis] for (_, axis), shape in given]
    highs = [shape.max[axis] for (_, axis), shape in given]
    low, high = max(lows), min(highs)
    subject = (
        f"profiles[{index}]: {_places([place for place, _ in given])} share the name {name!r}, "
        "so TensorRT-RTX takes them as equal"
    )
    ranges = _and([f"{a}..{b}" for a, b in zip(lows, highs, strict=True)])
    if low > high:
        message = f"{subject}, but their ranges {ranges} do not overlap: give them one range"
        return Reason(R.PROFILE_SHARED_DIMS, message, Severity.ERROR)
    if low < high and len(set(opts)) > 1:
        message = f"{subject}, but opt gives them {_and([str(o) for o in opts])}: give one opt"
        return Reason(R.PROFILE_SHARED_DIMS, message, Severity.ERROR)
    if len(set(lows)) == 1 and len(set(highs)) == 1:
        return None
    accepted = str(low) if low == high else f"{low}..{high}"
    message = f"{subject}: the engine accepts only {accepted} for them (ranges {ranges})"
    return Reason(R.PROFILE_SHARED_DIMS, message, Severity.WARNING)


def _places(places: list[tuple[str, int]]) -> str:
    """`input 'x' dims 2 and 3`, `input 'a' dim 0 and input 'b' dim 0`."""
    axes: dict[str, list[str]] = {}
    for tensor, axis in places:
        axes.setdefault(tensor, []).append(str(axis))
    return _and([f"input {t!r} dim{'s' * (len(a) > 1)} {_and(a)}" for t, a in axes.items()])


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def runs_on_of(
    target: Target, facts: ModelFacts, rules: RuleSet, current: CC | None
) -> tuple[str, ...]:
    """The GPUs the engine will run on, as CC names, `newer` for GPUs past the table."""
    if target.current:
        if target.ccs:
            return ()
        return (current.name,) if current is not None else ("current",)
    if target.ccs:
        return tuple(cc.name for cc in target.ccs)
    required = required_cc(facts, rules)
    floor = required[0] if required else None
    return (
        *(cc.name for cc in rules.default_targets if floor is None or cc >= floor),
        NEWER,
    )


def expected_mask(cell: Cell) -> int | None:
    """The engine-header CC mask a CPU build of this cell must produce; None when unknown."""
    if cell.needs_gpu:
        return None
    if cell.target.ccs:
        return mask_of(cell.target.ccs)
    return DEFAULT_MASK


DEFAULT_MASK = mask_of(RULES_1_7.default_targets, newer=True)
"""0x7e: the default build's header names every default target whatever the dtypes
(measured: docs/tensorrt-rtx.md)."""
