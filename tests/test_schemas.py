"""The shipped JSON Schemas: valid 2020-12, found by name, printed by `rtx-matrix schema`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from matrix.cli import main
from matrix.errors import InputError
from matrix.schemas import NAMES, load_schema, schema_path

GOOD = sorted((Path(__file__).parent / "manifests" / "good").glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_draft_2020_12_with_editor_metadata(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"] and schema["description"]


def test_manifest_schema_closes_every_object() -> None:
    def objects(node: object) -> list[dict[str, object]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for value in node.values() for o in objects(value)]
        if isinstance(node, list):
            return [o for value in node for o in objects(value)]
        return []

    for obj in objects(load_schema("manifest")):
        assert "additionalProperties" in obj, obj.get("title")


def test_schema_path_finds_the_repository_copy() -> None:
    assert schema_path("manifest") == Path(__file__).resolve().parent.parent / "schemas" / (
        "manifest.schema.json"
    )


def test_unknown_schema_name() -> None:
    with pytest.raises(InputError, match="unknown schema 'nope': choose one of manifest, lockfile"):
        schema_path("nope")


def test_load_schema_returns_a_fresh_copy() -> None:
    load_schema("manifest")["title"] = "changed"
    assert load_schema("manifest")["title"] == "rtx-matrix manifest, version 1"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_manifests_pass_the_bare_schema_as_an_editor_would(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(Draft202012Validator(load_schema("manifest")).iter_errors(data)) == []


@pytest.mark.parametrize(("argv", "name"), [([], "manifest"), (["manifest"], "manifest"),
                                            (["lockfile"], "lockfile")])
def test_cli_prints_the_schema(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", *argv]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == load_schema(name)


def test_cli_refuses_an_unknown_schema(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["schema", "plan"])
    assert caught.value.code == 2
    assert "invalid choice: 'plan'" in capsys.readouterr().err
