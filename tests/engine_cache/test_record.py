"""The JSON record of a cached engine: written and read back, and refused when malformed."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from matrix.engine_cache.record import record_from_json, record_of, record_to_json
from matrix.lockfile.types import LockEntry, ModelRef

ENTRY = LockEntry(
    path="engines/m/m@sm86.engine",
    sha256="ab" * 32,
    size=1234,
    model=ModelRef("m", "m.onnx", "sha256:" + "cd" * 32, "ef" * 32, "01" * 32),
    targets=("sm86",),
    resolved_targets=("sm86",),
    runs_on=("sm86",),
    weightless=False,
    options=MappingProxyType({"builder": {}, "profiles": []}),
    fingerprint="23" * 32,
    build_seconds=1.5,
    built_at="2026-01-01T00:00:00Z",
    header_mask=4,
)


def test_a_record_reads_back_as_written() -> None:
    record = record_of(ENTRY, "1.7.1.116", "the log\n", "0.1.0")
    again = record_from_json(record_to_json(record))
    assert again == record
    assert again.lock_entry() == ENTRY
    assert (again.sha256, again.size, again.header_mask, again.runs_on) == (
        ENTRY.sha256, 1234, 4, ("sm86",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("sha256"), "the record has no 'sha256'"),
        (lambda d: d.update(size="12"), "the record holds '12' where a int belongs"),
        (lambda d: d.update(format=2), "not in a format this rtx-matrix reads"),
        (lambda d: d["entry"].pop("model"), "its lock entry is malformed"),
    ],
)
def test_a_malformed_record_is_refused(change: object, message: str) -> None:
    data = json.loads(record_to_json(record_of(ENTRY, "1.7.1.116", "", "0.1.0")))
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        record_from_json(json.dumps(data))
    with pytest.raises(ValueError, match="not JSON"):
        record_from_json(b"\xff{")
