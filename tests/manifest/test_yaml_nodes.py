"""YAML composition: locations, duplicate keys, merges, tags, and the alias budget."""

from __future__ import annotations

import time

import yaml

from matrix.errors import Problem
from matrix.manifest.yaml_nodes import (
    Document,
    check_budget,
    child_path,
    compose,
    decode,
    to_document,
)


def document_of(text: str) -> Document:
    root = compose(text, "f.yaml")
    assert root is not None and not isinstance(root, Problem)
    return to_document(root, "f.yaml")


def test_uses_the_c_loader_when_available() -> None:
    from matrix.manifest.yaml_nodes import Loader

    assert Loader is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def test_child_path_spelling() -> None:
    assert child_path("$", "models") == "$.models"
    assert child_path("$.models", 0) == "$.models[0]"
    assert child_path("$.targets", "ampere-plus") == "$.targets.ampere-plus"
    assert child_path("$.p", "input:0") == "$.p['input:0']"


def test_scalars_are_typed_like_safe_load() -> None:
    text = "a: 1\nb: 8.6\nc: '8.6'\nd: yes\ne: ~\nf: [x, 2]\n"
    assert document_of(text).data == yaml.safe_load(text)


def test_merge_keys_explicit_wins_and_locations_follow_the_source() -> None:
    doc = document_of("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert doc.data["use"] == {"x": 1, "y": 3}
    assert doc.locations["$.use.x"] == (1, 11)
    assert doc.locations["$.use.y"] == (4, 3)
    assert doc.problems == []


def test_duplicate_keys_are_problems_at_the_second() -> None:
    doc = document_of("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 1, "b": 2}
    assert doc.problems == [Problem("f.yaml", "duplicate key 'a' (first at line 1)", 3, 1, "$.a")]


def test_unknown_tags_and_complex_keys() -> None:
    doc = document_of("a: !thing x\n? [1, 2]\n: b\n")
    assert sorted(str(p) for p in doc.problems) == [
        "f.yaml:1:4: $.a: unsupported YAML tag '!thing'",
        "f.yaml:2:3: $: a mapping key must be plain text",
    ]


def test_syntax_error_position() -> None:
    problem = compose("a: [1, 2\nb: 3\n", "f.yaml")
    assert isinstance(problem, Problem)
    assert (problem.line, problem.json_path) == (2, "$")
    assert problem.message.startswith("invalid YAML: ")


def test_control_characters_are_reported_with_position() -> None:
    problem = compose("a: 1\nb: \x07\n", "f.yaml")
    assert isinstance(problem, Problem)
    assert (problem.line, problem.column) == (2, 4)


def test_decode_drops_a_bom_and_locates_bad_bytes() -> None:
    assert decode(b"\xef\xbb\xbfa: 1\n", "f.yaml") == "a: 1\n"
    problem = decode(b"a: 1\nb: \xff\n", "f.yaml")
    assert problem == Problem("f.yaml", "not UTF-8 text: byte 0xff cannot be decoded", 2, 4, "$")


def test_budget_counts_expansions_not_nodes_written() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n"
    root = compose(text, "f.yaml")
    assert root is not None and not isinstance(root, Problem)
    # 1 root + 2 keys + a (4 nodes) + b (1 + 4 * 4) = 24 nodes once expanded
    assert check_budget(root, "f.yaml", budget=24) is None
    problem = check_budget(root, "f.yaml", budget=23)
    assert problem is not None and problem.json_path == "$"
    problem = check_budget(root, "f.yaml", budget=10)
    assert problem is not None and (problem.json_path, problem.line) == ("$.b", 2)


def test_budget_check_of_a_huge_expansion_is_instant() -> None:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 30)]
    root = compose("\n".join(lines), "f.yaml")
    assert root is not None and not isinstance(root, Problem)
    started = time.perf_counter()
    assert check_budget(root, "f.yaml") is not None
    assert time.perf_counter() - started < 0.05


def test_self_referencing_alias_is_refused() -> None:
    root = compose("a:\n  b: &x [1, *x]\n", "f.yaml")
    assert root is not None and not isinstance(root, Problem)
    problem = check_budget(root, "f.yaml")
    assert problem == Problem("f.yaml", "a YAML alias refers to itself", 2, 6, "$.a.b")
