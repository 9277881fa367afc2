"""The lockfile: stable text, atomic writes, schema errors as one clean line."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from matrix.errors import InputError
from matrix.lockfile.io import lock_from_json, lock_to_json, read_lock, write_lock
from matrix.lockfile.types import Lock, LockEntry, ModelRef, PlanIdentity, TensorSpec

SHA = "a" * 64


def entry(
    name: str = "m", sha: str = SHA, seconds: float = 0.5, peak: int | None = None
) -> LockEntry:
    return LockEntry(
        path=f"engines/{name}/{name}@sm86.engine",
        sha256=sha,
        size=1234,
        model=ModelRef(name, f"models/{name}.onnx", "sha256:" + "0" * 64, "1" * 64, "2" * 64),
        targets=("sm86",),
        resolved_targets=("sm86",),
        runs_on=("sm86",),
        weightless=False,
        options=MappingProxyType({"builder": {"optimization_level": 3}, "profiles": []}),
        fingerprint="f" * 64,
        build_seconds=seconds,
        built_at="2025-01-01T00:00:00Z",
        header_mask=4,
        io=(TensorSpec("x", "input", "fp32", (-1, 16)), TensorSpec("y", "output", "fp16", (-1,))),
        weights_bytes=1600,
        peak_rss_bytes=peak,
    )


def lock(**engines: LockEntry) -> Lock:
    return Lock(
        tool="0.1.0",
        tensorrt_rtx="1.7.1.116",
        manifest="rtx-matrix.yaml",
        plan=PlanIdentity("e" * 64, tuple(sorted(engines))),
        engines=MappingProxyType(engines),
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    original = lock(**{"a@sm86": entry("a"), "b@sm86": entry("b")})
    path = tmp_path / "m.lock"
    write_lock(path, original)
    again = read_lock(path)
    assert again is not None
    assert lock_to_json(again) == lock_to_json(original)
    assert again.engines["a@sm86"].options["builder"] == {"optimization_level": 3}
    assert again.engines["b@sm86"] == original.engines["b@sm86"]


def test_text_is_sorted_and_one_field_per_line() -> None:
    text = lock_to_json(lock(**{"b@sm86": entry("b"), "a@sm86": entry("a")}))
    assert text.index('"a@sm86"') < text.index('"b@sm86"')
    assert '      "targets": ["sm86"],\n' in text
    assert '      "size": 1234,\n' in text
    assert json.loads(text)["engines"]["a@sm86"]["size"] == 1234
    assert text.endswith("}\n")


def test_rebuilding_one_cell_changes_only_its_lines() -> None:
    before = lock_to_json(lock(**{"a@sm86": entry("a"), "b@sm86": entry("b")})).splitlines()
    rebuilt = entry("b", sha="b" * 64, seconds=0.7)
    after = lock_to_json(lock(**{"a@sm86": entry("a"), "b@sm86": rebuilt})).splitlines()
    changed = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert [y.strip() for _, y in changed] == [
        '"build_seconds": 0.7,',
        f'"sha256": "{"b" * 64}",',
    ]


def test_engine_facts_are_one_line_each_and_round_trip(tmp_path: Path) -> None:
    text = lock_to_json(lock(**{"a@sm86": entry("a")}))
    assert (
        '      "io": [{"dtype": "fp32", "mode": "input", "name": "x", "shape": [-1, 16]}, '
        '{"dtype": "fp16", "mode": "output", "name": "y", "shape": [-1]}],\n' in text
    )
    assert '      "weights_bytes": 1600\n' in text  # the entry's last field
    assert '      "stripped_weights_bytes": null,\n' in text
    again = lock_from_json(text)  # checked against the schema too
    assert again.engines["a@sm86"].io == entry("a").io


def test_a_lock_written_before_engine_facts_still_reads(tmp_path: Path) -> None:
    data = json.loads(lock_to_json(lock(**{"a@sm86": entry("a")})))
    for field in ("io", "weights_bytes", "stripped_weights_bytes"):
        del data["engines"]["a@sm86"][field]
    old = lock_from_json(json.dumps(data)).engines["a@sm86"]
    assert (old.io, old.weights_bytes, old.stripped_weights_bytes) == ((), None, None)


def test_peak_memory_is_a_line_of_its_own_and_optional() -> None:
    text = lock_to_json(lock(**{"a@sm86": entry("a", peak=1010155520), "b@sm86": entry("b")}))
    assert '      "peak_rss_bytes": 1010155520,\n' in text
    assert '      "peak_rss_bytes": null,\n' in text
    engines = lock_from_json(text).engines
    assert engines["a@sm86"].peak_rss_bytes == 1010155520
    assert engines["b@sm86"].peak_rss_bytes is None
    older = json.loads(text)  # written before the field existed
    del older["engines"]["a@sm86"]["peak_rss_bytes"]
    assert lock_from_json(json.dumps(older)).engines["a@sm86"].peak_rss_bytes is None
    older["engines"]["a@sm86"]["peak_rss_bytes"] = -1
    with pytest.raises(InputError, match=r"peak_rss_bytes: -1 is less than the minimum of 0"):
        lock_from_json(json.dumps(older), "m.lock")


def test_absent_lock_is_none(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "none.lock") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "m.lock: bad lockfile: not valid JSON (Expecting property name"),
        ('{"version": 1}', "m.lock: bad lockfile: does not match the lockfile schema: $: "),
        ("[]", "m.lock: bad lockfile: does not match the lockfile schema: $: [] is not of type"),
    ],
)
def test_bad_lock_is_one_clean_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.lock"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        read_lock(path)
    assert len(error.value.problems) == 1
    assert str(error.value.problems[0]).startswith(str(tmp_path / message))


def test_schema_checks_entry_fields(tmp_path: Path) -> None:
    data = json.loads(lock_to_json(lock(**{"a@sm86": entry("a")})))
    data["engines"]["a@sm86"]["sha256"] = "xyz"
    with pytest.raises(InputError, match=r"\$\.engines\['a@sm86'\]\.sha256: 'xyz' does not match"):
        lock_from_json(json.dumps(data), "m.lock")


def test_unvalidated_read_still_refuses_wrong_types() -> None:
    data = json.loads(lock_to_json(lock(**{"a@sm86": entry("a")})))
    data["engines"]["a@sm86"]["size"] = "big"
    with pytest.raises(InputError, match="does not match the lockfile schema"):
        lock_from_json(json.dumps(data), "m.lock", validate=False)


def test_write_leaves_no_temp_file_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    write_lock(path, lock(**{"a@sm86": entry("a")}))
    write_lock(path, lock())
    assert [p.name for p in tmp_path.iterdir()] == ["m.lock"]
    again = read_lock(path)
    assert again is not None and dict(again.engines) == {}


def test_a_lock_whose_bytes_passed_the_schema_skips_it_anywhere(tmp_path: Path) -> None:
    """A fresh clone's lock, known to no cache by its path, skips jsonschema when the same
    bytes passed before; a lock that broke the schema is never marked."""
    import subprocess
    import sys

    from matrix.manifest.valid_cache import mark_path

    path = tmp_path / "a" / "m.lock"
    path.parent.mkdir()
    write_lock(path, lock(**{"a@sm86": entry("a")}))
    assert read_lock(path) is not None
    assert mark_path(path.read_bytes(), "lockfile").is_file()
    clone = tmp_path / "b" / "m.lock"
    clone.parent.mkdir()
    clone.write_bytes(path.read_bytes())
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         f"from pathlib import Path; from matrix.lockfile.io import read_lock; "
         f"assert read_lock(Path({str(clone)!r})) is not None"],
        capture_output=True, text=True, check=True,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "jsonschema" not in imported
    broken = json.loads(path.read_text())
    broken["engines"]["a@sm86"]["size"] = "big"
    clone.write_text(json.dumps(broken))
    with pytest.raises(InputError):
        read_lock(clone)
    assert not mark_path(clone.read_bytes(), "lockfile").exists()
