"""ModelFacts cached on disk, keyed by the `FileStat` of the model and its external data,
and by the model's content.

A no-op `build` reads facts for every model: this module must stay cheap to import and
to hit (no `onnx` import, one small JSON file per model, a few `stat` calls). An entry whose
stats are racy (`matrix.file_stat`) is checked by content digest until they age.

A model with no entry for its path (a fresh clone, another worktree, a CI checkout) is
looked up by content before it is inspected: `by-content/<sha256 of the ONNX file>.json`
holds the facts of those bytes, used once the model's digest (with its external data) is
checked to be theirs. Inspecting costs a second per model and more (ONNX parsing, shape
inference, the library's own parser in a child process); hashing it, milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from matrix.atomic import sha256_file, write_atomic
from matrix.cache_dir import cache_dir
from matrix.facts.onnx_inspect import content_digest, inspect_model
from matrix.facts.types import ModelFacts, NodeFinding, ParserCheck, ParserError, TensorInfo
from matrix.file_stat import FileStat, file_stat, is_racy

CACHE_VERSION = 4
"""Bump when `inspect_model` learns something new, so old entries are re-inspected."""
BY_CONTENT = "by-content"

Stats = dict[str, FileStat]
"""The model's ("") and each external-data file's (by its name) stat."""


class FactsCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else cache_dir()

    def get(self, path: Path) -> ModelFacts:
        """Facts of the model at `path`: cached when its files are unchanged or their bytes
        known, else inspected.

        Raises `matrix.facts.onnx_inspect.ModelFileError` when the model cannot be used.
        """
        path = Path(os.path.abspath(path))
        known, key, seen = self._lookup(path)
        if known is not None:
            return known
        read_at, before = time.time_ns(), _stats(path, ())
        # The bytes just hashed to look them up are the ones about to be read: not hashed
        # again, unless the file moved since.
        facts = inspect_model(path, file_sha256=key if before == seen else None)
        if self._keep(path, facts, read_at, before):
            self._store_by_content(path, facts)
        return facts

    def peek(self, path: Path) -> ModelFacts | None:
        """The cached facts when the model's files are unchanged or their bytes known; None,
        never an inspection."""
        return self._lookup(Path(os.path.abspath(path)))[0]

    def _lookup(self, path: Path) -> tuple[ModelFacts | None, str | None, Stats | None]:
        """(the known facts, else None; the sha256 of the ONNX file when it was hashed to
        look it up by content, and the model's stat then, which stands for those bytes unless
        the file was modified within its clock's tick of the hashing: None then)."""
        cached = _cached(self.entry_path(path), path)
        if cached is not None or not path.is_file():
            return cached, None, None
        read_at, before = time.time_ns(), _stats(path, ())
        facts, key = self._by_content(path)
        if facts is not None:
            self._keep(path, facts, read_at, before)
        if before is None or _racy(before, read_at):
            return facts, None, None
        return facts, key, before

    def _keep(self, path: Path, facts: ModelFacts, read_at: int, before: Stats | None) -> bool:
        """Store `facts` under the model's stats, unless it was rewritten while they were
        read (`before`: its stat then): they must not be cached under its new stat."""
        after = _stats(path, facts.external_files)
        if after is None or before is None or before[""] != after[""]:
            return False
        _store_entry(self.entry_path(path), _entry(path, after, facts, read_at))
        return True

    def add_parser_check(self, path: Path, facts: ModelFacts, check: ParserCheck) -> ModelFacts:
        """`facts` with the parser's verdict, stored with them while the files are unchanged
        (the verdict is for the bytes the facts' digest names, and for one library version)."""
        path = Path(os.path.abspath(path))
        checked = replace(facts, parser=check)
        entry_file = self.entry_path(path)
        loaded = _load_entry(entry_file, path)
        if loaded is not None and loaded[0].digest == facts.digest:
            _, stats, racy = loaded
            entry = _entry(path, stats, checked, time.time_ns())
            entry["racy"] = entry["racy"] or racy
            _store_entry(entry_file, entry)
            self._store_by_content(path, checked)
        return checked

    def entry_path(self, path: Path) -> Path:
        name = hashlib.sha256(os.fsencode(path)).hexdigest()
        return self.directory / f"{name}.json"

    def _by_content(self, path: Path) -> tuple[ModelFacts | None, str | None]:
        """The facts of a model with the same bytes, wherever it was (None when none is known
        or the model or its external data cannot be read: inspecting then says why), and the
        sha256 of the ONNX file's bytes (None when they could not be read)."""
        try:
            key = sha256_file(path)
        except OSError:
            return None, None
        try:
            entry = json.loads((self.directory / BY_CONTENT / f"{key}.json").read_bytes())
            if entry["version"] != CACHE_VERSION:
                return None, key
            facts = facts_from_json(entry["facts"])
            # The ONNX file names its external data: theirs must be the same bytes too.
            digest = (content_digest(path, facts.external_files) if facts.external_files
                      else f"sha256:{key}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, key
        return (replace(facts, path=str(path)) if digest == facts.digest else None), key

    def _store_by_content(self, path: Path, facts: ModelFacts) -> None:
        try:
            key = (sha256_file(path) if facts.external_files
                   else facts.digest.removeprefix("sha256:"))
        except OSError:
            return
        entry = {"version": CACHE_VERSION, "facts": facts_to_json(facts)}
        _store_entry(self.directory / BY_CONTENT / f"{key}.json", entry)


def _stats(path: Path, external_files: tuple[str, ...]) -> Stats | None:
    """Stat of the model ("") and each external file; None when one vanished meanwhile."""
    files = [("", path), *((name, path.parent / name) for name in external_files)]
    stats: Stats = {}
    for name, file in files:
        try:
            stat = file_stat(file)
        except OSError:
            stat = None
        if stat is None:
            return None
        stats[name] = stat
    return stats


def _racy(stats: Stats, read_at_ns: int) -> bool:
    return any(is_racy(stat, read_at_ns) for stat in stats.values())


def _cached(entry_file: Path, path: Path) -> ModelFacts | None:
    loaded = _load_entry(entry_file, path)
    if loaded is None:
        return None
    facts, stats, racy = loaded
    if not racy:
        return facts
    read_at = time.time_ns()
    try:
        unchanged = content_digest(path, facts.external_files) == facts.digest
    except OSError:
        return None
    if not unchanged:
        return None
    if not _racy(stats, read_at):
        _store_entry(entry_file, _entry(path, stats, facts, read_at))
    return facts


def _load_entry(entry_file: Path, path: Path) -> tuple[ModelFacts, Stats, bool] | None:
    """(facts, stats, racy) when the entry is sound and every stat still matches."""
    try:
        entry = json.loads(entry_file.read_bytes())
        if entry["version"] != CACHE_VERSION or entry["path"] != str(path):
            return None
        facts = facts_from_json(entry["facts"])
        stats = _stats(path, facts.external_files)
        recorded = {name: FileStat(*stat) for name, stat in entry["stats"].items()}
        if stats is None or recorded != stats:
            return None
        return facts, stats, bool(entry["racy"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Missing or corrupt entry, or a model that changed: inspect again.
        return None


def _store_entry(entry_file: Path, entry: dict[str, Any]) -> None:
    """Write atomically; a cache we cannot write is no error, only a slower next run."""
    with contextlib.suppress(OSError):
        write_atomic(entry_file, json.dumps(entry, sort_keys=True), durable=False)


def _entry(path: Path, stats: Stats, facts: ModelFacts, read_at_ns: int) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "path": str(path),
        "stats": {name: list(stat) for name, stat in stats.items()},
        "racy": _racy(stats, read_at_ns),
        "facts": facts_to_json(facts),
    }


def _tensor_to_json(tensor: TensorInfo) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": tensor.dtype, "shape": list(tensor.shape)}


def _tensor_from_json(data: dict[str, Any]) -> TensorInfo:
    shape = tuple(d if d is None or isinstance(d, (int, str)) else int(d) for d in data["shape"])
    return TensorInfo(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)


def facts_to_json(facts: ModelFacts) -> dict[str, Any]:
    return {
        "path": facts.path,
        "dtypes": sorted(facts.dtypes),
        "nodes": [[n.kind, n.node, n.op, n.detail] for n in facts.nodes],
        "inputs": [_tensor_to_json(t) for t in facts.inputs],
        "outputs": [_tensor_to_json(t) for t in facts.outputs],
        "digest": facts.digest,
        "graph_digest": facts.graph_digest,
        "weights_digest": facts.weights_digest,
        "size": facts.size,
        "external_files": list(facts.external_files),
        "opset": facts.opset,
        "shape_inputs": list(facts.shape_inputs),
        "parser": _parser_to_json(facts.parser),
    }


def facts_from_json(data: dict[str, Any]) -> ModelFacts:
    return ModelFacts(
        path=str(data["path"]),
        dtypes=frozenset(str(d) for d in data["dtypes"]),
        nodes=tuple(NodeFinding(*(str(v) for v in n)) for n in data["nodes"]),
        inputs=tuple(_tensor_from_json(t) for t in data["inputs"]),
        outputs=tuple(_tensor_from_json(t) for t in data["outputs"]),
        digest=str(data["digest"]),
        graph_digest=str(data["graph_digest"]),
        weights_digest=str(data["weights_digest"]),
        size=int(data["size"]),
        external_files=tuple(str(f) for f in data["external_files"]),
        opset=int(data["opset"]),
        shape_inputs=tuple(str(name) for name in data["shape_inputs"]),
        parser=_parser_from_json(data["parser"]),
    )


def _parser_to_json(check: ParserCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    errors = [[e.node, e.op, e.message] for e in check.errors]
    return {"tensorrt_rtx": check.tensorrt_rtx, "errors": errors}


def _parser_from_json(data: dict[str, Any] | None) -> ParserCheck | None:
    if data is None:
        return None
    errors = tuple(ParserError(*(str(v) for v in e)) for e in data["errors"])
    return ParserCheck(tensorrt_rtx=str(data["tensorrt_rtx"]), errors=errors)
