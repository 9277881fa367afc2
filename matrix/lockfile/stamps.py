"""Stamps: what this machine knows of the files a build wrote or hashed, each file's
`FileStat` and the sha256 it had, so a no-op build trusts a file by `stat` alone.

Kept inside the output folder (`.rtx-matrix/stamps.json`) and never checked in: a clone or
another machine has other mtimes and inodes, so its first run hashes once and then trusts the
stamps too. Like make, a stamp is trusted as soon as it is recorded, without the racy rule of
`matrix.file_stat`: an edit that keeps a file's size, mtime and inode is what `--verify` is for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from matrix.file_stat import FileStat, file_stat

STATE_DIR = ".rtx-matrix"
STAMPS_FILE = "stamps.json"


class Stamp(NamedTuple):
    stat: FileStat
    sha256: str
    """Empty for the lock, whose stamp only says that it was written or checked here."""

    def to_json(self) -> list[Any]:
        # sha256 third: rtx-matrix 0.1.0 read [size, mtime_ns, sha256] and ignores the rest.
        size, mtime_ns, ino = self.stat
        return [size, mtime_ns, self.sha256, ino]


def state_dir(output: Path) -> Path:
    return output / STATE_DIR


class Stamps:
    """Keyed by absolute path; saved only when something changed.

    Entries stay as read from JSON until one is asked for: a no-op build over 10,000 engines
    compares each with a stat once, and building 10,000 objects first would cost more.
    """

    def __init__(self, file: Path, raw: dict[str, Any] | None = None) -> None:
        self.file = file
        self._raw: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self._dirty = False

    @classmethod
    def load(cls, output: Path) -> Stamps:
        """The stamps of `output`; an unreadable or foreign state file counts as empty."""
        file = state_dir(output) / STAMPS_FILE
        try:
            raw = json.loads(file.read_bytes())
        except (OSError, ValueError):
            raw = None
        return cls(file, raw)

    def get(self, path: Path | str) -> Stamp | None:
        """The stamp of `path`, whatever the file looks like now."""
        return _parse(self._raw.get(str(path)))

    def unchanged(self, path: Path | str, stat: FileStat | None = None) -> Stamp | None:
        """The stamp of `path` when the file still has its stat (`stat`, when the caller has
        just taken it), else None."""
        known = self.get(path)
        if known is None:
            return None
        return known if known.stat == (stat or file_stat(path)) else None

    def recorded_stat(self, path: Path | str) -> tuple[int, int, int] | None:
        """The stat its stamp holds, (size, mtime_ns, ino) as a `FileStat` compares; no
        objects made (the no-op memo takes 10,000 of them)."""
        raw = self._raw.get(str(path))
        if type(raw) is not list or len(raw) != 4:
            return None
        return raw[0], raw[1], raw[3]

    def matches(self, path: Path | str, size: int, sha256: str) -> bool:
        """Whether the file at `path` has a stamp with this size and sha256 and still has its
        stat."""
        raw = self._raw.get(str(path))
        # [size, mtime_ns, sha256, ino] (Stamp.to_json), compared as read: no objects made.
        if type(raw) is not list or len(raw) != 4:
            return False
        if raw[0] != size or raw[2] != sha256:
            return False
        return file_stat(path) == (size, raw[1], raw[3])

    def record(self, path: Path | str, sha256: str, stat: FileStat | None = None) -> None:
        """Stamp `path` with its `stat`, taken now when not given: take it before reading
        the file, so that a change while reading leaves a stamp that no longer matches."""
        entry = Stamp(stat or FileStat.of(os.stat(path)), sha256).to_json()
        if self._raw.get(str(path)) != entry:
            self._raw[str(path)] = entry
            self._dirty = True

    def forget(self, path: Path | str) -> None:
        if self._raw.pop(str(path), None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write atomically when changed; losing it only costs a re-hash, so no fsync."""
        if not self._dirty:
            return
        from matrix.atomic import write_atomic  # its tempfile import is for runs that write

        data = dict(sorted(self._raw.items()))
        write_atomic(self.file, json.dumps(data, separators=(",", ":")), durable=False)
        self._dirty = False


def _parse(raw: Any) -> Stamp | None:
    """A stamp from its JSON list; None for anything else (an older or foreign entry)."""
    try:
        size, mtime_ns, sha256, ino = raw
        return Stamp(FileStat(int(size), int(mtime_ns), int(ino)), str(sha256))
    except (TypeError, ValueError):
        return None
