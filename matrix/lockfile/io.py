"""Read and write the lockfile (`<manifest stem>.lock`, JSON, schemas/lockfile.schema.json).

The text is stable: sorted keys, two-space indent, and every field of an engine entry on its
own line, so rebuilding one cell changes only that cell's lines in a diff. Writes go to a
temporary sibling that is fsynced and then renamed over the lock, so the lock on disk always
parses, whatever interrupts the writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from matrix.errors import InputError, Problem
from matrix.lockfile.types import (
    LOCK_VERSION,
    Lock,
    LockEntry,
    ModelRef,
    PlanIdentity,
    TensorSpec,
)

_COMPACT = (", ", ": ")
_EXPANDED_DEPTH = 2
"""Containers up to this depth (top, engines/plan, one entry) get one line per member."""


def read_lock(path: Path, *, validate: bool = True) -> Lock | None:
    """The lock at `path`, or None when there is none.

    A lock that does not parse or breaks the schema is an InputError with one line saying why.
    `validate=False` skips the JSON Schema check (the typed conversion still refuses bad
    shapes): for a lock this tool wrote itself and that has not changed since, which keeps
    a no-op build from paying for `jsonschema`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        problem = Problem(str(path), f"cannot read the lockfile: {error.strerror}")
        raise InputError([problem]) from None
    return lock_from_json(text, source=str(path), validate=validate)


def write_lock(path: Path, lock: Lock) -> None:
    """Replace the lock at `path` atomically and durably (temp file, fsync, rename, fsync dir)."""
    from matrix.atomic import write_atomic  # its tempfile import is for runs that write

    write_atomic(path, lock_to_json(lock))


# ---------------------------------------------------------------------------------- to JSON


EntryCache = dict[str, tuple[LockEntry, str]]
"""Cell id -> (entry, its text): a writer that rewrites the lock after every cell formats
only the entries that changed."""


def lock_to_json(lock: Lock, cache: EntryCache | None = None) -> str:
    header = lock_to_dict(lock, engines=False)
    blocks = [_entry_block(cell, lock.engines[cell], cache) for cell in sorted(lock.engines)]
    members = {key: _format(value, 1) for key, value in header.items()}
    members["engines"] = "{\n" + ",\n".join(blocks) + "\n  }" if blocks else "{}"
    lines = [f"  {json.dumps(key)}: {members[key]}" for key in sorted(members)]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _entry_block(cell: str, entry: LockEntry, cache: EntryCache | None) -> str:
    if cache is not None:
        known = cache.get(cell)
        if known is not None and known[0] is entry:
            return known[1]
    text = f"    {json.dumps(cell, ensure_ascii=False)}: {_format(entry_to_dict(entry), 2)}"
    if cache is not None:
        cache[cell] = (entry, text)
    return text


def lock_to_dict(lock: Lock, engines: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": lock.version,
        "tool": lock.tool,
        "tensorrt_rtx": lock.tensorrt_rtx,
        "manifest": lock.manifest,
        "plan": {"digest": lock.plan.digest, "cells": list(lock.plan.cells)},
    }
    if engines:
        data["engines"] = {cell: entry_to_dict(entry) for cell, entry in lock.engines.items()}
    if lock.shard is not None:
        data["shard"] = lock.shard
    return data


def entry_to_dict(entry: LockEntry) -> dict[str, Any]:
    model = entry.model
    return {
        "path": entry.path,
        "sha256": entry.sha256,
        "size": entry.size,
        "model": {
            "name": model.name,
            "path": model.path,
            "digest": model.digest,
            "graph_digest": model.graph_digest,
            "weights_digest": model.weights_digest,
        },
        "targets": list(entry.targets),
        "resolved_targets": list(entry.resolved_targets),
        "runs_on": list(entry.runs_on),
        "weightless": entry.weightless,
        "options": plain_json(entry.options),
        "fingerprint": entry.fingerprint,
        "build_seconds": entry.build_seconds,
        "built_at": entry.built_at,
        "header_mask": entry.header_mask,
        "gpu": entry.gpu,
        "io": [tensor_to_dict(tensor) for tensor in entry.io],
        "weights_bytes": entry.weights_bytes,
        "stripped_weights_bytes": entry.stripped_weights_bytes,
        "peak_rss_bytes": entry.peak_rss_bytes,
        "source": entry.source,
    }


def tensor_to_dict(tensor: TensorSpec) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "mode": tensor.mode,
        "dtype": tensor.dtype,
        "shape": list(tensor.shape),
    }


def tensor_from_dict(data: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=_str(data["name"]),
        mode=_str(data["mode"]),
        dtype=_str(data["dtype"]),
        shape=tuple(_int(d) for d in data["shape"]),
    )


def plain_json(value: Any) -> Any:
    """Read-only mappings and tuples back into what `json` writes."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    return value


def stable_json(value: Any, expanded_depth: int) -> str:
    """JSON with sorted keys whose containers down to `expanded_depth` have one member per
    line and deeper ones sit on one line: diffs show which record changed, and no more."""
    return _format(value, 0, expanded_depth) + "\n"


def _format(value: Any, depth: int, expanded_depth: int = _EXPANDED_DEPTH) -> str:
    expand = depth <= expanded_depth and isinstance(value, (dict, list)) and len(value) > 0
    if not expand:
        return json.dumps(value, sort_keys=True, separators=_COMPACT, ensure_ascii=False)
    inner = "  " * (depth + 1)
    if isinstance(value, dict):
        lines = [
            f"{inner}{json.dumps(key, ensure_ascii=False)}: "
            f"{_format(value[key], depth + 1, expanded_depth)}"
            for key in sorted(value)
        ]
        opening, closing = "{", "}"
    else:
        lines = [f"{inner}{_format(item, depth + 1, expanded_depth)}" for item in value]
        opening, closing = "[", "]"
    return opening + "\n" + ",\n".join(lines) + "\n" + "  " * depth + closing


# -------------------------------------------------------------------------------- from JSON


def lock_from_json(text: str, source: str = "<lock>", *, validate: bool = True) -> Lock:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(source, f"not valid JSON ({error.msg} at line {error.lineno})") from None
    checked = False
    if validate:
        # A lock whose bytes passed before skips jsonschema (0.2 s for a fresh clone's).
        from matrix.manifest.valid_cache import known_valid, remember_valid

        raw = text.encode()
        checked = not known_valid(raw, "lockfile")
    if checked:
        _check_schema(data, source)
    try:
        lock = lock_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _bad(source, f"does not match the lockfile schema ({error!r})") from None
    if checked:
        remember_valid(raw, "lockfile")
    return lock


def _check_schema(data: Any, source: str) -> None:
    # Imported here: jsonschema costs ~0.1 s, and a lock we wrote ourselves skips it.
    from matrix.manifest.schema_check import first_issue

    issue = first_issue(data, "lockfile")
    if issue is not None:
        where, message = issue
        raise _bad(source, f"does not match the lockfile schema: {where}: {message}")


def _bad(source: str, message: str) -> InputError:
    return InputError([Problem(source, f"bad lockfile: {message}")])


def lock_from_dict(data: Mapping[str, Any]) -> Lock:
    if data["version"] != LOCK_VERSION:
        raise ValueError(f"unsupported lockfile version {data['version']!r}")
    plan = data["plan"]
    engines = {str(cell): entry_from_dict(entry) for cell, entry in data["engines"].items()}
    return Lock(
        tool=_str(data["tool"]),
        tensorrt_rtx=_str(data["tensorrt_rtx"]),
        manifest=_str(data["manifest"]),
        plan=PlanIdentity(digest=_str(plan["digest"]), cells=_strs(plan["cells"])),
        engines=MappingProxyType(engines),
        shard=None if data.get("shard") is None else _str(data["shard"]),
        version=LOCK_VERSION,
    )


def entry_from_dict(data: Mapping[str, Any]) -> LockEntry:
    model = data["model"]
    options = data["options"]
    if not isinstance(options, dict):
        raise TypeError("options must be an object")
    return LockEntry(
        path=_str(data["path"]),
        sha256=_str(data["sha256"]),
        size=_int(data["size"]),
        model=ModelRef(
            name=_str(model["name"]),
            path=_str(model["path"]),
            digest=_str(model["digest"]),
            graph_digest=_str(model["graph_digest"]),
            weights_digest=_str(model["weights_digest"]),
        ),
        targets=_strs(data["targets"]),
        resolved_targets=_strs(data["resolved_targets"]),
        runs_on=_strs(data["runs_on"]),
        weightless=_bool(data["weightless"]),
        options=MappingProxyType(options),
        fingerprint=_str(data["fingerprint"]),
        build_seconds=float(data["build_seconds"]),
        built_at=_str(data["built_at"]),
        header_mask=_int(data["header_mask"]),
        gpu=None if data.get("gpu") is None else _str(data["gpu"]),
        io=tuple(tensor_from_dict(tensor) for tensor in data.get("io") or ()),
        weights_bytes=_optional_int(data.get("weights_bytes")),
        stripped_weights_bytes=_optional_int(data.get("stripped_weights_bytes")),
        peak_rss_bytes=_optional_int(data.get("peak_rss_bytes")),
        source=_str(data.get("source", "built")),
    )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strs(value: Any) -> tuple[str, ...]:
    if type(value) is list and _ONLY_STR.issuperset(map(type, value)):
        return tuple(value)  # checked in one C loop: a lock has three lists per entry
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}")
    return tuple(_str(v) for v in value)


_ONLY_STR = frozenset({str})


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value
