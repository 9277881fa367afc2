"""Validate plain data against a shipped JSON Schema and say what is wrong: the one place
that renders schema errors, for the manifest and the lockfile.

jsonschema's own messages (`'x' is not of type 'array'`, `Additional properties are not
allowed`) and its anyOf noise are for schema authors; users get one line per real problem in
a manifest (`schema_issues`). The schema may carry `errorMessage` / `patternErrorMessage`
(extensions VS Code and yaml-language-server also show) for cases a generic phrase says badly.
A lockfile is written by the tool, not by hand, so it gets only its most relevant violation,
in jsonschema's words (`first_issue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from matrix.manifest.suggest import did_you_mean
from matrix.manifest.yaml_nodes import child_path
from matrix.schemas import load_schema

Issue = tuple[str, str]
"""(JSON path, message)."""
_Found = tuple[str, str, bool]
"""(JSON path, message, whether it says the value has the wrong type)."""

_REFUSED_OPTIONS = {
    "timing_cache": "TensorRT-RTX has no timing cache to configure",
    "timing_cache_file": "TensorRT-RTX has no timing cache to configure",
    "hardware_compatibility_level": (
        "TensorRT-RTX ignores hardware compatibility levels: choose compute capabilities "
        "in `targets` instead"
    ),
    "version_compatible": (
        "TensorRT-RTX does not support version-compatible engines: rebuild when the library "
        "version changes (rtx-matrix does so)"
    ),
    "runtime_platform": (
        "TensorRT-RTX refuses other runtime platforms; a default engine already runs on "
        "Windows and Linux"
    ),
}

_SINGULAR = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}
_PLURAL = {
    "object": "mappings",
    "array": "lists",
    "string": "strings",
    "integer": "integers",
    "number": "numbers",
    "boolean": "true/false values",
    "null": "empty values",
}


@cache
def validator(name: str) -> Draft202012Validator:
    """Compiled once per process: the no-op build pays for it a single time."""
    return Draft202012Validator(_inline_refs(load_schema(name)))


def _inline_refs(schema: Any, root: Any = None) -> Any:
    """Replace local `$ref`s by what they point at: a third of validation time otherwise goes
    to reference lookups. Our schemas are not recursive, so this terminates."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [_inline_refs(item, root) for item in schema]
    if not isinstance(schema, dict):
        return schema
    inlined = {key: _inline_refs(value, root) for key, value in schema.items()}
    ref = inlined.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/"):
        return {**_inline_refs(_resolve({"$ref": ref}, root), root), **inlined}
    if ref is not None:
        inlined["$ref"] = ref
    return inlined


def schema_issues(data: Any, name: str = "manifest") -> list[Issue]:
    """Every schema violation in `data`, as friendly (path, message) pairs, noise removed."""
    checker = validator(name)
    root: Mapping[str, Any] = checker.schema if isinstance(checker.schema, Mapping) else {}
    found: list[_Found] = []
    for error in checker.iter_errors(data):
        found.extend(_translate(error, root))
    return _without_noise(found)


def first_issue(data: Any, name: str) -> Issue | None:
    """The violation jsonschema ranks most relevant, in its own words; None when valid."""
    error = best_match(validator(name).iter_errors(data))
    return None if error is None else (error.json_path, error.message)


def _without_noise(found: list[_Found]) -> list[Issue]:
    """Drop repeats, and other complaints about a value whose type is already wrong."""
    mistyped = {path for path, _, wrong_type in found if wrong_type}
    kept: list[Issue] = []
    for path, message, wrong_type in found:
        noise = path in mistyped and not wrong_type
        if not noise and (path, message) not in kept:
            kept.append((path, message))
    return kept


def _schema(error: ValidationError) -> Mapping[str, Any]:
    """The failing (sub)schema; the stubs also allow bool and Unset, which ours never are."""
    return error.schema if isinstance(error.schema, Mapping) else {}


def _value(error: ValidationError) -> Any:
    """The failing keyword's value in the schema (`minimum: 0` gives 0)."""
    value: Any = error.validator_value
    return value


def _instance(error: ValidationError) -> Any:
    """The offending part of the data."""
    instance: Any = error.instance
    return instance


def json_path(error: ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path = child_path(path, part)
    return path


def _translate(error: ValidationError, root: Mapping[str, Any]) -> Iterator[_Found]:
    path = json_path(error)
    kind = error.validator
    if kind == "additionalProperties" and _value(error) is False:
        yield from _unknown_keys(error, path)
    elif kind in ("anyOf", "oneOf"):
        yield from _best_branch(error, root, path)
    elif "propertyNames" in error.relative_schema_path:
        # The key itself broke the rule: point at the key, not at its mapping.
        yield child_path(path, str(_instance(error))), _message(error, root), False
    else:
        yield path, _message(error, root), kind == "type"


def _unknown_keys(error: ValidationError, path: str) -> Iterator[_Found]:
    known = list(_schema(error).get("properties", {}))
    instance: dict[str, Any] = _instance(error)
    for key in instance:
        if key in known:
            continue
        yield child_path(path, key), _unknown_key_message(key, known), False


def _unknown_key_message(key: str, known: list[str]) -> str:
    if key in _REFUSED_OPTIONS and ("optimization_level" in known or "builder" in known):
        return f"'{key}' is not accepted: {_REFUSED_OPTIONS[key]}"
    suggestion = did_you_mean(key, known)
    if "builder" in known and not suggestion and _looks_like_option(key):
        # A build option written beside `builder:` instead of inside it.
        hint = "" if key in _BUILDER_OPTIONS else did_you_mean(key, _BUILDER_OPTIONS)
        return f"unknown key {key!r}: build options go under `builder:`" + (
            f" ({hint.removeprefix(', ')})" if hint else ""
        )
    return f"unknown key {key!r}{suggestion}"


_BUILDER_OPTIONS = (
    "optimization_level",
    "tiling_optimization_level",
    "max_aux_streams",
    "workspace",
)


def _looks_like_option(key: str) -> bool:
    return key in _BUILDER_OPTIONS or bool(did_you_mean(key, _BUILDER_OPTIONS))


def _best_branch(error: ValidationError, root: Mapping[str, Any], path: str) -> Iterator[_Found]:
    """Report the branch the value was evidently meant for; else the schema's summary."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        branches.setdefault(_branch_index(sub, error), []).append(sub)
    fitting = [
        subs for subs in branches.values()
        if not any(sub.validator == "type" and not sub.relative_path for sub in subs)
    ]
    if fitting:
        for sub in min(fitting, key=len):
            yield from _translate(sub, root)
        return
    summary = _schema(error).get("errorMessage")
    if not summary:
        types = [_schema_type(branch, root) for branch in _value(error)]
        summary = "must be " + _either(_SINGULAR.get(t, t) for t in types if t)
    yield path, f"{summary} {_got(_instance(error))}", True


def _branch_index(sub: ValidationError, parent: ValidationError) -> int:
    depth = len(parent.relative_schema_path)
    schema_path = list(sub.absolute_schema_path)
    index = schema_path[depth] if len(schema_path) > depth else 0
    return int(index)


def _message(error: ValidationError, root: Mapping[str, Any]) -> str:
    schema = _schema(error)
    kind = error.validator
    value = _value(error)
    if kind == "type":
        return _type_message(error, root)
    if kind == "enum":
        choices = ", ".join(repr(choice) for choice in value)
        instance = _instance(error)
        hint = did_you_mean(instance, map(str, value)) if isinstance(instance, str) else ""
        return f"must be one of {choices} {_got(_instance(error))}{hint}"
    if kind == "const":
        return str(schema.get("errorMessage", f"must be {value!r}")) + f" {_got(_instance(error))}"
    if kind == "required":
        return _missing_keys([key for key in value if key not in _instance(error)])
    if kind == "dependentRequired":
        # One error per missing key and per key that needs it: say the whole set each time,
        # so the repeats collapse into one line.
        instance = _instance(error)
        needed = (dep for key, deps in value.items() if key in instance for dep in deps)
        return _missing_keys([key for key in dict.fromkeys(needed) if key not in instance])
    if kind == "pattern":
        return f"{_instance(error)!r} {schema.get('patternErrorMessage', 'has the wrong form')}"
    if kind in ("minItems", "minLength") and value == 1:
        return "must not be empty"
    if kind == "minProperties":
        names = list(schema.get("properties", {}))
        return "must set at least one of " + _either(names) if names else "must not be empty"
    return _bound_message(error)


def _missing_keys(keys: list[str]) -> str:
    quoted = [repr(key) for key in keys]
    if len(quoted) == 1:
        return f"missing required key {quoted[0]}"
    return f"missing required keys {', '.join(quoted[:-1])} and {quoted[-1]}"


def _bound_message(error: ValidationError) -> str:
    value = _value(error)
    phrases = {
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "exclusiveMinimum": f"must be more than {value}",
        "exclusiveMaximum": f"must be less than {value}",
        "minItems": f"must have at least {value} items",
        "maxItems": f"must have at most {value} items",
        "minLength": f"must be at least {value} characters long",
    }
    if error.validator in phrases:
        return f"{phrases[str(error.validator)]} {_got(_instance(error))}"
    return error.message


def _type_message(error: ValidationError, root: Mapping[str, Any]) -> str:
    wanted = _value(error)
    types = [wanted] if isinstance(wanted, str) else list(wanted)
    if "number" in types:  # integers are numbers: say it once
        types = [t for t in types if t != "integer"]
    if types == ["array"]:
        items = _resolve(_schema(error).get("items", {}), root)
        item_types = items.get("type")
        if item_types:
            listed = [item_types] if isinstance(item_types, str) else item_types
            if "number" in listed:
                listed = [t for t in listed if t != "integer"]
            plural = _either(_PLURAL[t] for t in listed)
            return f"must be a list of {plural} {_got(_instance(error))}"
    return f"must be {_either(_SINGULAR[t] for t in types)} {_got(_instance(error))}"


def _schema_type(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    kind = _resolve(schema, root).get("type", "")
    return kind if isinstance(kind, str) else ""


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local `$ref` (`#/$defs/x`); our schemas use no other kind."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return _resolve(target, root)


def _either(words: Iterable[str]) -> str:
    listed = list(dict.fromkeys(words))
    if len(listed) <= 1:
        return "".join(listed)
    return ", ".join(listed[:-1]) + " or " + listed[-1]


def _got(instance: Any) -> str:
    """What the user wrote, briefly: `(got 'high')`, `(got a mapping)`, `(got nothing)`."""
    if instance is None:
        return "(got nothing)"
    if isinstance(instance, dict):
        return "(got a mapping)"
    if isinstance(instance, list):
        return "(got a list)"
    text = repr(instance)
    return f"(got {text if len(text) <= 40 else text[:37] + '...'})"
