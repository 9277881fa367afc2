"""YAML text -> plain data plus where each JSON path stands, refusing what PyYAML lets through.

PyYAML silently keeps the last of duplicate keys and happily expands alias bombs, and its
constructed objects forget their line numbers. So we only compose (aliases stay shared node
objects), check the expansion size against a budget, then build the data ourselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from matrix.errors import Problem
from matrix.manifest.types import Location

Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NODE_BUDGET = 100_000
"""Most nodes a document may have once aliases are expanded; real manifests stay far below."""

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    _TAG + name for name in ("null", "bool", "int", "float", "str", "binary", "timestamp")
)
_MERGE_TAG = _TAG + "merge"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONSTRUCTOR = SafeConstructor()


def child_path(parent: str, key: str | int) -> str:
    """JSON path of a child: `$.models[0]`, `$.targets.ampere-plus`, `$.profiles[0]['in:0']`."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{key!r}]"


def location_of(node: Node) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


@dataclass
class Document:
    """The data of one YAML document, where each JSON path starts, and what went wrong."""

    data: Any = None
    locations: dict[str, Location] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def decode(raw: bytes, file: str) -> str | Problem:
    """UTF-8 text (a BOM is dropped), or a Problem pointing at the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        bad = raw[error.start : error.start + 1].hex()
        return Problem(file, f"not UTF-8 text: byte 0x{bad} cannot be decoded", line, column, "$")


def compose(text: str, file: str) -> Node | Problem | None:
    """The document's root node (None when empty), or a Problem for invalid YAML."""
    try:
        return yaml.compose(text, Loader=Loader)  # type: ignore[no-any-return]
    except yaml.MarkedYAMLError as error:
        return _syntax_problem(error, file)
    except yaml.reader.ReaderError as error:
        line, column = _position(text, error.position)
        return Problem(file, f"invalid YAML: {error.reason} (character {error.character!r})",
                       line, column, "$")
    except yaml.YAMLError as error:
        return Problem(file, f"invalid YAML: {error}", 1, 1, "$")
    except RecursionError:
        return Problem(file, "invalid YAML: nested too deeply", 1, 1, "$")


def _syntax_problem(error: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = error.problem_mark or error.context_mark
    message = f"invalid YAML: {error.problem or error.context}"
    if error.context and error.problem and error.context_mark is not None:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    if mark is None:
        return Problem(file, message, 1, 1, "$")
    return Problem(file, message, mark.line + 1, mark.column + 1, "$")


def _position(text: str, offset: int) -> Location:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def check_budget(root: Node, file: str, budget: int = NODE_BUDGET) -> Problem | None:
    """Refuse a document whose alias expansion exceeds `budget` nodes, without expanding it.

    Aliases share node objects, so memoising each node's expanded size makes this linear in
    the document as written, however large the expansion.
    """
    sizes: dict[int, int] = {}
    try:
        total = _expanded_size(root, sizes, set(), budget)
    except _Recursive as error:
        path = _path_to(error.node, root, "$", set()) or "$"
        return Problem(file, "a YAML alias refers to itself", *location_of(error.node), path)
    except RecursionError:
        return Problem(file, "YAML nested too deeply", *location_of(root), "$")
    if total <= budget:
        return None
    message = f"YAML aliases expand to more than {budget:,} nodes (an alias bomb?): refused"
    return _problem_at(root, sizes, file, message, budget)


class _Recursive(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded_size(node: Node, sizes: dict[int, int], active: set[int], budget: int) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise _Recursive(node)
    active.add(key)
    total = 1
    for child in _children(node):
        total += _expanded_size(child, sizes, active, budget)
        if total > budget:
            break  # the caller refuses anyway; sizes past the budget need not be exact
    active.discard(key)
    sizes[key] = total
    return total


def _entries(node: Node) -> list[tuple[str | int, Node]]:
    if isinstance(node, SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, MappingNode):
        return [(str(key.value), value) for key, value in node.value]
    return []


def _path_to(target: Node, node: Node, path: str, seen: set[int]) -> str | None:
    """JSON path of the first place `target` appears below `node`."""
    if node is target:
        return path
    seen.add(id(node))
    for key, child in _entries(node):
        if id(child) not in seen or child is target:
            found = _path_to(target, child, child_path(path, key), seen)
            if found:
                return found
    return None


def _problem_at(root: Node, sizes: dict[int, int], file: str, message: str, budget: int) -> Problem:
    """Point at the deepest node whose expansion alone exceeds the budget."""
    node, path = root, "$"
    while True:
        oversized = [(k, c) for k, c in _entries(node) if sizes.get(id(c), 0) > budget]
        if not oversized:
            return Problem(file, message, *location_of(node), path)
        key, node = oversized[0]
        path = child_path(path, key)


def to_document(root: Node, file: str) -> Document:
    """Build plain data from checked nodes, recording locations and per-node problems."""
    document = Document()
    document.locations["$"] = location_of(root)
    document.data = _Builder(document, file).build(root, "$")
    return document


@dataclass
class _Builder:
    document: Document
    file: str

    def problem(self, node: Node, path: str, message: str) -> None:
        self.document.problems.append(Problem(self.file, message, *location_of(node), path))

    def build(self, node: Node, path: str) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            return self.sequence(node, path)
        assert isinstance(node, MappingNode)
        return self.mapping(node, path)

    def scalar(self, node: ScalarNode, path: str) -> Any:
        if node.tag not in _SCALAR_TAGS:
            # Keep the text so that the tag is the only complaint about this value.
            self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
            return str(node.value)
        try:
            return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        except (yaml.YAMLError, ValueError) as error:
            self.problem(node, path, f"invalid {node.tag.removeprefix(_TAG)} value: {error}")
            return None

    def sequence(self, node: SequenceNode, path: str) -> list[Any]:
        if node.tag != _TAG + "seq":
            self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
        items = []
        for index, item in enumerate(node.value):
            item_path = child_path(path, index)
            self.document.locations[item_path] = location_of(item)
            items.append(self.build(item, item_path))
        return items

    def mapping(self, node: MappingNode, path: str) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        explicit, merged = self.pairs(node, path)
        for key_node, value_node, key in explicit:
            if key in first_seen:
                line = first_seen[key].start_mark.line + 1
                self.problem(key_node, child_path(path, key),
                             f"duplicate key {key!r} (first at line {line})")
                continue
            first_seen[key] = key_node
            result[key] = self.entry(key_node, value_node, child_path(path, key))
        for key_node, value_node, key in merged:
            if key not in result:  # explicit keys win over merged ones, earlier merges win
                result[key] = self.entry(key_node, value_node, child_path(path, key))
        return result

    def entry(self, key_node: Node, value_node: Node, path: str) -> Any:
        self.document.locations[path] = location_of(key_node)
        return self.build(value_node, path)

    def pairs(
        self, node: MappingNode, path: str
    ) -> tuple[list[tuple[Node, Node, str]], list[tuple[Node, Node, str]]]:
        """The mapping's own (key, value, text) entries, and those `<<` merges in."""
        explicit: list[tuple[Node, Node, str]] = []
        merged: list[tuple[Node, Node, str]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self.merge_sources(value_node, path))
            elif isinstance(key_node, ScalarNode):
                explicit.append((key_node, value_node, str(key_node.value)))
            else:
                self.problem(key_node, path, "a mapping key must be plain text")
        return explicit, merged

    def merge_sources(self, value: Node, path: str) -> list[tuple[Node, Node, str]]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        entries: list[tuple[Node, Node, str]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                self.problem(source, path, "'<<' merges only mappings")
                continue
            own, inherited = self.pairs(source, path)
            entries.extend(own + inherited)
        return entries
