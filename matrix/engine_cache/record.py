"""The JSON record of one cached engine: what it is, how it was built, and its builder log.

Besides the fields a reader checks (sha256, size, header mask, library version), a record
carries the lock entry written where the engine was built, so a machine that fetches it
gets the same engine facts in its own lock as the builder had (whatever fields the lock
grows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from matrix.lockfile.io import entry_from_dict, entry_to_dict
from matrix.lockfile.types import LockEntry

RECORD_FORMAT = 1


@dataclass(frozen=True)
class Record:
    fingerprint: str
    sha256: str
    size: int
    header_mask: int
    runs_on: tuple[str, ...]
    tensorrt_rtx: str
    build_seconds: float
    built_at: str
    log: str
    """The builder log written beside the engine where it was built."""
    tool: str
    """rtx-matrix version that pushed it."""
    entry: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The lock entry where it was built, as the lockfile writes it."""

    def lock_entry(self) -> LockEntry:
        """The recorded lock entry; ValueError when it is not one."""
        try:
            return entry_from_dict(self.entry)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"its lock entry is malformed ({error!r})") from None


def record_of(entry: LockEntry, tensorrt_rtx: str, log: str, tool: str) -> Record:
    return Record(
        fingerprint=entry.fingerprint,
        sha256=entry.sha256,
        size=entry.size,
        header_mask=entry.header_mask,
        runs_on=entry.runs_on,
        tensorrt_rtx=tensorrt_rtx,
        build_seconds=entry.build_seconds,
        built_at=entry.built_at,
        log=log,
        tool=tool,
        entry=MappingProxyType(entry_to_dict(entry)),
    )


def record_to_json(record: Record) -> str:
    data = {
        "format": RECORD_FORMAT,
        "fingerprint": record.fingerprint,
        "sha256": record.sha256,
        "size": record.size,
        "header_mask": record.header_mask,
        "runs_on": list(record.runs_on),
        "tensorrt_rtx": record.tensorrt_rtx,
        "build_seconds": record.build_seconds,
        "built_at": record.built_at,
        "log": record.log,
        "tool": record.tool,
        "entry": dict(record.entry),
    }
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def record_from_json(text: str | bytes) -> Record:
    """ValueError with a one-line reason when `text` is not a record this version reads."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"the record is not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ValueError("the record is not in a format this rtx-matrix reads")
    try:
        record = Record(
            fingerprint=_typed(data["fingerprint"], str),
            sha256=_typed(data["sha256"], str),
            size=_typed(data["size"], int),
            header_mask=_typed(data["header_mask"], int),
            runs_on=tuple(_typed(cc, str) for cc in _typed(data["runs_on"], list)),
            tensorrt_rtx=_typed(data["tensorrt_rtx"], str),
            build_seconds=float(_typed(data["build_seconds"], (int, float))),
            built_at=_typed(data["built_at"], str),
            log=_typed(data["log"], str),
            tool=_typed(data["tool"], str),
            entry=MappingProxyType(_typed(data["entry"], dict)),
        )
    except KeyError as missing:
        raise ValueError(f"the record has no {missing}") from None
    record.lock_entry()
    return record


def _typed(value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"the record holds {value!r} where a {_name(kind)} belongs")
    return value


def _name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else kind.__name__
