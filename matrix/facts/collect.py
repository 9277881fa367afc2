"""ONNX facts for every model of a manifest, and the checks that need both.

Bad model files and profiles that contradict their model are bad input: every problem
of the manifest is collected and raised at once as one InputError, located in the YAML.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from matrix.errors import InputError, Problem
from matrix.facts.cache import FactsCache
from matrix.facts.onnx_inspect import ModelFileError
from matrix.facts.types import INTEGER_DTYPES, ModelFacts, ParserCheck, TensorInfo
from matrix.manifest.loader import display_path
from matrix.manifest.suggest import did_you_mean
from matrix.manifest.types import InputShape, Manifest, Model, ValueRange
from matrix.manifest.yaml_nodes import child_path

if TYPE_CHECKING:
    from concurrent.futures import Future


def gather_facts(
    manifest: Manifest, cache: FactsCache, tensorrt_rtx: str | None = None
) -> dict[str, ModelFacts]:
    """Facts keyed by model name; each distinct ONNX file is inspected once.

    With `tensorrt_rtx` (the installed library's version), each model also carries the ONNX
    parser's verdict: cached, else asked of that library in child processes.
    """
    cached = {path: cache.peek(path) for path in dict.fromkeys(m.onnx for m in manifest.models)}
    parsing = None
    if tensorrt_rtx is not None:
        unchecked = [
            path
            for path, found in cached.items()
            if not _checked(found, tensorrt_rtx) and path.is_file()
        ]
        parsing = _start_parser_checks(unchecked, tensorrt_rtx) if unchecked else None
    by_file = {path: found or _inspect(cache, path) for path, found in cached.items()}
    if parsing is not None:
        _add_parser_checks(by_file, cache, parsing.result())
    facts: dict[str, ModelFacts] = {}
    problems: list[Problem] = []
    for model in manifest.models:
        found = by_file[model.onnx]
        if isinstance(found, ModelFileError):
            where = f"$.models[{model.index}].onnx"
            problems.append(_problem(manifest, where, f"{model.onnx_rel}: {found.reason}"))
            continue
        facts[model.name] = found
        problems.extend(
            _problem(manifest, where, message) for where, message in _profile_problems(model, found)
        )
    if problems:
        raise InputError(problems)
    return facts


def _start_parser_checks(
    unchecked: list[Path], tensorrt_rtx: str
) -> Future[dict[Path, ParserCheck]]:
    """The parser's verdicts, asked while the caller inspects the models: the children's
    library import overlaps the parent's `onnx` import."""
    from concurrent.futures import ThreadPoolExecutor

    from matrix.facts.parser_check import check_models

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(check_models, unchecked, tensorrt_rtx)
    finally:
        pool.shutdown(wait=False)


def _checked(facts: ModelFacts | None, tensorrt_rtx: str) -> bool:
    return (
        facts is not None and facts.parser is not None and facts.parser.tensorrt_rtx == tensorrt_rtx
    )


def _add_parser_checks(
    by_file: dict[Path, ModelFacts | ModelFileError],
    cache: FactsCache,
    verdicts: dict[Path, ParserCheck],
) -> None:
    for path, check in verdicts.items():
        found = by_file[path]
        if isinstance(found, ModelFacts):  # a file that is no model is bad input already
            by_file[path] = cache.add_parser_check(path, found, check)


def _inspect(cache: FactsCache, path: Path) -> ModelFacts | ModelFileError:
    try:
        return cache.get(path)
    except ModelFileError as error:
        return error


def _problem(manifest: Manifest, json_path: str, message: str) -> Problem:
    line, column = manifest.locate(json_path) or (None, None)
    return Problem(
        file=display_path(manifest.path),
        message=message,
        line=line,
        column=column,
        json_path=json_path,
    )


def _profile_problems(model: Model, facts: ModelFacts) -> Iterator[tuple[str, str]]:
    """(JSON path, message) for each profile shape the model contradicts."""
    inputs = {t.name: t for t in facts.inputs}
    for index, profile in enumerate(model.profiles):
        base = f"$.models[{model.index}].profiles[{index}]"
        for shape in profile.shapes:
            where = child_path(base, shape.input)
            tensor = inputs.get(shape.input)
            if tensor is None:
                hint = did_you_mean(shape.input, inputs) or _known_inputs(inputs)
                yield where, f"the model has no input {shape.input!r}{hint}"
                continue
            if shape.has_dims:
                yield from _shape_problems(where, tensor, shape)
            if shape.values is not None:
                yield from _value_problems(child_path(where, "values"), tensor, shape.values)


def _known_inputs(inputs: dict[str, TensorInfo]) -> str:
    names = ", ".join(repr(n) for n in inputs)
    return f" (its inputs: {names})" if names else " (it has no inputs)"


def _shape_problems(where: str, tensor: TensorInfo, shape: InputShape) -> Iterator[tuple[str, str]]:
    # The loader has already checked that min, opt and max agree on the rank.
    if len(shape.min) != len(tensor.shape):
        yield (
            where,
            (
                f"input {tensor.name!r} {_show(tensor.shape)} has rank {len(tensor.shape)}, "
                f"but the profile gives it {len(shape.min)} dims"
            ),
        )
        return
    for kind, dims in (("min", shape.min), ("opt", shape.opt), ("max", shape.max)):
        for axis, (fixed, given) in enumerate(zip(tensor.shape, dims, strict=True)):
            if isinstance(fixed, int) and fixed >= 0 and given != fixed:
                yield (
                    f"{child_path(where, kind)}[{axis}]",
                    (
                        f"input {tensor.name!r} {_show(tensor.shape)} has dim {axis} fixed at "
                        f"{fixed}, but {kind} gives {given}"
                    ),
                )


def _value_problems(
    where: str, tensor: TensorInfo, values: ValueRange
) -> Iterator[tuple[str, str]]:
    if tensor.dtype not in INTEGER_DTYPES:
        kind = tensor.dtype or "not a tensor of numbers"
        yield (
            where,
            f"input {tensor.name!r} is {kind}: only an INT32 or INT64 input holds a shape, "
            "so only those take values",
        )
        return
    if tensor.is_dynamic:
        return  # the parser refuses a shape input of dynamic size (docs/profiles.md)
    count = math.prod(d for d in tensor.shape if isinstance(d, int))
    if len(values.min) != count:
        yield (
            where,
            f"input {tensor.name!r} {_show(tensor.shape)} holds {count} "
            f"value{'s' * (count != 1)}, but the profile gives {len(values.min)}",
        )


def _show(shape: tuple[int | str | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
