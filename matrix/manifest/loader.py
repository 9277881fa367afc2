"""Read a YAML manifest into a frozen `Manifest`, or fail with every problem in it at once.

Stages: read and decode, compose YAML (refusing alias bombs and duplicate keys), validate
against schemas/manifest.schema.json (the single definition of structure), then the checks
a schema cannot express: names, compute capabilities, duplicates, shape ordering, the output
folder, exclusions. The semantic stage runs even when the schema stage found problems, so it
guards every type instead of trusting it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matrix.errors import InputError, Problem
from matrix.manifest.output import output_escape
from matrix.manifest.suggest import did_you_mean
from matrix.manifest.types import (
    CURRENT,
    DEFAULT,
    BuilderOptions,
    CacheSpec,
    Exclusion,
    InputShape,
    Location,
    Manifest,
    Model,
    Profile,
    Target,
    ValueRange,
    locate,
)
from matrix.manifest.valid_cache import known_valid, remember_valid
from matrix.manifest.yaml_nodes import (
    Document,
    check_budget,
    child_path,
    compose,
    decode,
    to_document,
)
from matrix.plan.capabilities import KNOWN, is_known, looks_like_cc, parse_cc

DEFAULT_OUTPUT = "engines"
BUILTIN_NAMES = (DEFAULT, CURRENT)
KNOWN_NAMES = tuple(cc.name for cc in KNOWN)
_KNOWN_LIST = ", ".join(KNOWN_NAMES)
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(i?))?B?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}
_Bounds = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def display_path(path: Path) -> str:
    """`path` relative to the current folder when it lies below it, else as given."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_manifest(path: Path) -> Manifest:
    """The manifest at `path`; InputError listing every problem found, nothing else raised."""
    file = display_path(path)
    raw = _read_bytes(path, file)
    document = _read_document(raw, file)
    problems = list(document.problems)
    schema_checked = not known_valid(raw)
    if schema_checked:
        problems.extend(_schema_problems(document, file))
    interpreter = _Interpreter(Path(os.path.abspath(path)), file, document)
    manifest = interpreter.manifest()
    problems.extend(interpreter.problems)
    if problems:
        raise InputError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    if schema_checked:
        remember_valid(raw)
    return manifest


def _schema_problems(document: Document, file: str) -> list[Problem]:
    # Imported here: jsonschema costs a no-op run more than everything else in this module.
    from matrix.manifest.schema_check import schema_issues

    return [
        Problem(file, message, *_locate(document.locations, json_path), json_path)
        for json_path, message in schema_issues(document.data)
    ]


def parse_size(value: int | str) -> int | None:
    """Bytes from `4096`, `"4096"`, `"512MiB"`, `"2GiB"`, `"1GB"`; None when not a size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        return None
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    power = _POWERS[prefix.upper()] if prefix else 0
    return int(float(number) * base**power)


def _read_bytes(path: Path, file: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError([Problem(file, "no such manifest file")]) from None
    except OSError as error:
        raise InputError([Problem(file, f"cannot read the manifest: {error.strerror}")]) from None


def _read_document(raw: bytes, file: str) -> Document:
    """Everything up to plain data; a problem that leaves nothing to check is raised at once."""
    text = decode(raw, file)
    if isinstance(text, Problem):
        raise InputError([text])
    root = compose(text, file)
    if isinstance(root, Problem):
        raise InputError([root])
    if root is None:
        empty = "the manifest is empty: start with 'version: 1'"
        raise InputError([Problem(file, empty, 1, 1, "$")])
    too_big = check_budget(root, file)
    if too_big:
        raise InputError([too_big])
    document = to_document(root, file)
    if not isinstance(document.data, dict):
        line, column = document.locations["$"]
        message = "the manifest must be a mapping of keys (version, models, ...)"
        raise InputError([*document.problems, Problem(file, message, line, column, "$")])
    return document


def _locate(locations: Mapping[str, Location], json_path: str) -> Location:
    """Where `json_path` stands, or its nearest located ancestor; the file's start if none."""
    return locate(locations, json_path) or (1, 1)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else None


def _spelling(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


class _Interpreter:
    """Turns schema-shaped data into typed objects, collecting semantic problems."""

    def __init__(self, path: Path, file: str, document: Document) -> None:
        self.path = path
        self.file = file
        self.data: dict[str, Any] = document.data
        self.locations = document.locations
        self.problems: list[Problem] = []
        self.named: dict[str, Target] = {}

    def problem(self, json_path: str, message: str) -> None:
        line, column = _locate(self.locations, json_path)
        self.problems.append(Problem(self.file, message, line, column, json_path))

    def repeated(self, first: dict[str, int], key: str, index: int, path: str, what: str) -> bool:
        """Whether `key` is already item `first[key]` of its list (a problem at `path`);
        else it is remembered as item `index`."""
        if key in first:
            self.problem(path, f"duplicate {what}{key!r} (already item {first[key]})")
            return True
        first[key] = index
        return False

    def manifest(self) -> Manifest:
        output, output_rel = self.output()
        self.named = self.named_targets()
        builder = self.builder(self.data.get("builder"), "$.builder")
        models = self.models(builder)
        version = self.data.get("version")
        return Manifest(
            path=self.path,
            output=output,
            output_rel=output_rel,
            targets=tuple(self.named.values()),
            models=models,
            exclude=self.exclusions({model.name for model in models}),
            builder=builder,
            version=version if isinstance(version, int) else 1,
            cache=self.cache(),
            locations=MappingProxyType(dict(self.locations)),
        )

    # output

    def output(self) -> tuple[Path, str]:
        raw = self.data.get("output", DEFAULT_OUTPUT)
        if not isinstance(raw, str) or not raw:
            raw = DEFAULT_OUTPUT  # the schema reported it
        root = self.path.parent
        lexical = Path(os.path.normpath(root / raw))
        message = output_escape(raw, root, lexical)
        if message:
            self.problem("$.output", message)
        return lexical, raw

    # the engine cache

    def cache(self) -> CacheSpec | None:
        from matrix.engine_cache.config import credentials_in, folder_or_url

        raw = self.data.get("cache")
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str) or not raw["url"]:
            return None  # absent, or the schema reported it
        refused = credentials_in(raw["url"])
        if refused:
            self.problem("$.cache.url", refused)
        push = raw.get("push", True)
        url = folder_or_url(raw["url"], str(self.path.parent))
        return CacheSpec(url, push if isinstance(push, bool) else True)

    # targets

    def named_targets(self) -> dict[str, Target]:
        named: dict[str, Target] = {}
        for name, items in _mapping(self.data.get("targets")).items():
            path = child_path("$.targets", name)
            self.check_set_name(name, path)
            named[name] = self.named_set(name, items, path)
        return named

    def check_set_name(self, name: str, path: str) -> None:
        if name in BUILTIN_NAMES:
            self.problem(path, f"{name!r} is a built-in target and cannot name a set")
        elif looks_like_cc(name):
            self.problem(path, f"{name!r} is a compute capability and cannot name a set")

    def named_set(self, name: str, items: Any, path: str) -> Target:
        ccs = set()
        current = False
        first: dict[str, int] = {}
        for index, item in _items(items):
            item_path = child_path(path, index)
            canonical = self.set_item(item, item_path)
            if canonical is None or self.repeated(first, canonical, index, item_path, ""):
                continue
            if canonical == CURRENT:
                current = True
            else:
                ccs.add(parse_cc(canonical))
        return Target(name, ccs=tuple(sorted(ccs)), current=current)

    def set_item(self, item: Any, path: str) -> str | None:
        """Canonical spelling of one item of a named set (`sm86`, `current`), or None."""
        if not _is_scalar(item):
            return None  # the schema reported it
        if item == CURRENT:
            return CURRENT
        if looks_like_cc(item):
            cc = parse_cc(item)
            if is_known(cc):
                return cc.name
            self.problem(path, _not_a_target(item))
            return None
        hint = did_you_mean(_spelling(item), (*KNOWN_NAMES, CURRENT))
        self.problem(path, f"{_spelling(item)!r} is not a compute capability or 'current'{hint}")
        return None

    def resolve_target(self, item: Any, path: str) -> Target | None:
        """A model's or an exclusion's target entry; None (with a problem) when unknown."""
        if not _is_scalar(item):
            return None  # the schema reported it
        if item == DEFAULT:
            return Target(DEFAULT)
        if item == CURRENT:
            return Target(CURRENT, current=True)
        if isinstance(item, str) and item in self.named:
            return self.named[item]
        if looks_like_cc(item):
            cc = parse_cc(item)
            if is_known(cc):
                return Target(cc.name, ccs=(cc,))
            self.problem(path, _not_a_target(item))
            return None
        choices = (*BUILTIN_NAMES, *KNOWN_NAMES, *self.named)
        hint = did_you_mean(_spelling(item), choices)
        self.problem(path, f"unknown target {_spelling(item)!r}{hint}")
        return None

    # builder options

    def builder(self, raw: Any, path: str) -> BuilderOptions:
        options = _mapping(raw)
        level = _integer(options.get("optimization_level"))
        tiling = options.get("tiling_optimization_level")
        return BuilderOptions(
            optimization_level=level if level is not None and 0 <= level <= 5 else None,
            tiling_optimization_level=tiling if isinstance(tiling, str) else None,
            max_aux_streams=_integer(options.get("max_aux_streams")),
            workspace_bytes=self.workspace(options.get("workspace"), child_path(path, "workspace")),
        )

    def workspace(self, raw: Any, path: str) -> int | None:
        if raw is None or isinstance(raw, bool) or not isinstance(raw, (int, str)):
            return None
        size = parse_size(raw)
        if size is not None and size < 1 and isinstance(raw, str):
            self.problem(path, f"{raw!r} is no memory at all: the workspace needs at least 1 byte")
        return size

    # models

    def models(self, builder: BuilderOptions) -> tuple[Model, ...]:
        models: list[Model] = []
        first_line: dict[str, int] = {}
        for index, raw in _items(self.data.get("models")):
            path = child_path("$.models", index)
            entry = _mapping(raw)
            name = entry.get("name")
            if isinstance(name, str):
                if name in first_line:
                    message = f"duplicate model name {name!r} (first at line {first_line[name]})"
                    self.problem(f"{path}.name", message)
                else:
                    first_line[name] = _locate(self.locations, f"{path}.name")[0]
            models.append(self.model(index, entry, path, builder))
        return tuple(models)

    def model(self, index: int, entry: dict[str, Any], path: str, builder: BuilderOptions) -> Model:
        onnx_rel = entry.get("onnx")
        onnx_rel = onnx_rel if isinstance(onnx_rel, str) else ""
        name = entry.get("name")
        name = name if isinstance(name, str) else ""
        family = entry.get("family")
        return Model(
            name=name,
            family=family if isinstance(family, str) else name,
            onnx=(self.path.parent / onnx_rel).resolve(),
            onnx_rel=onnx_rel,
            targets=self.model_targets(entry.get("targets"), f"{path}.targets"),
            weightless=_weightless(entry.get("weightless", False)),
            profiles=self.profiles(entry.get("profiles"), f"{path}.profiles"),
            builder=builder.merged(self.builder(entry.get("builder"), f"{path}.builder")),
            index=index,
        )

    def model_targets(self, raw: Any, path: str) -> tuple[Target, ...]:
        targets: list[Target] = []
        first: dict[str, int] = {}
        for index, item in _items(raw):
            item_path = child_path(path, index)
            target = self.resolve_target(item, item_path)
            if target is None or self.repeated(first, target.name, index, item_path, "target "):
                continue
            targets.append(target)
        return tuple(targets)

    def profiles(self, raw: Any, path: str) -> tuple[Profile, ...]:
        profiles: list[Profile] = []
        for index, entry in _items(raw):
            profile_path = child_path(path, index)
            shapes = [
                self.shape(name, spec, child_path(profile_path, name))
                for name, spec in _mapping(entry).items()
            ]
            if shapes and all(shapes):
                profiles.append(Profile(tuple(s for s in shapes if s is not None)))
        return tuple(profiles)

    def shape(self, name: str, spec: Any, path: str) -> InputShape | None:
        entry = _mapping(spec)
        dims: _Bounds = ((), (), ())
        if any(key in entry for key in ("min", "opt", "max")) or "values" not in entry:
            bounds = self.bounds(name, entry, _dims, path, "rank", "dimension")
            if bounds is None:
                return None
            dims = bounds
        values = None
        if "values" in entry:
            given = self.bounds(
                name, _mapping(entry["values"]), _values, f"{path}.values", "length", "value"
            )
            if given is None:
                return None
            values = ValueRange(*given)
        return InputShape(name, *dims, values=values)

    def bounds(
        self,
        name: str,
        entry: dict[str, Any],
        read: Callable[[Any], tuple[int, ...] | None],
        path: str,
        size: str,
        part: str,
    ) -> _Bounds | None:
        """min, opt and max of one input's dims (or values): equal sizes, ordered."""
        low, opt, high = (read(entry.get(key)) for key in ("min", "opt", "max"))
        if low is None or opt is None or high is None:
            return None  # the schema reported it
        if not len(low) == len(opt) == len(high):
            sizes = f"{len(low)}, {len(opt)}, {len(high)}"
            what = f"input {name!r}" + (" values" if part == "value" else "")
            self.problem(path, f"{what}: min, opt and max must have the same {size} (got {sizes})")
            return None
        ordered = True
        for index, (a, b, c) in enumerate(zip(low, opt, high, strict=True)):
            if not a <= b <= c:
                ordered = False
                self.problem(
                    path,
                    f"input {name!r} {part} {index}: needs min <= opt <= max (got {a}, {b}, {c})",
                )
        return (low, opt, high) if ordered else None

    # exclusions

    def exclusions(self, model_names: Iterable[str]) -> tuple[Exclusion, ...]:
        names = sorted(model_names)
        exclusions: list[Exclusion] = []
        for index, raw in _items(self.data.get("exclude")):
            path = child_path("$.exclude", index)
            entry = _mapping(raw)
            model = entry.get("model")
            if isinstance(model, str) and model not in names:
                hint = did_you_mean(model, names)
                self.problem(f"{path}.model", f"unknown model {model!r}{hint}")
            target = self.resolve_target(entry.get("target"), f"{path}.target")
            weightless = entry.get("weightless")
            exclusions.append(
                Exclusion(
                    model=model if isinstance(model, str) else None,
                    target=target.name if target else None,
                    weightless=weightless if isinstance(weightless, bool) else None,
                )
            )
        return tuple(exclusions)


def _not_a_target(item: Any) -> str:
    spelt, dotted = _spelling(item), parse_cc(item).dotted
    also = "" if spelt == dotted else f" ({dotted})"
    return f"{spelt!r}{also} is not a TensorRT-RTX target: it builds for {_KNOWN_LIST}"


def _weightless(raw: Any) -> tuple[bool, ...]:
    values = [raw] if isinstance(raw, bool) else raw if isinstance(raw, list) else [False]
    kept = tuple(dict.fromkeys(v for v in values if isinstance(v, bool)))
    return kept or (False,)


def _dims(raw: Any) -> tuple[int, ...] | None:
    dims = _values(raw)
    return dims if dims is not None and all(d >= 1 for d in dims) else None


def _values(raw: Any) -> tuple[int, ...] | None:
    """Any integers: a shape input may hold 0 or -1 (Reshape's "copy" and "infer")."""
    if not isinstance(raw, list) or not raw:
        return None
    values = [_integer(v) for v in raw]
    if any(v is None for v in values):
        return None
    return tuple(v for v in values if v is not None)
