"""Local stamps: trust a file by size and mtime, notice when either moves."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from matrix.atomic import sha256_file
from matrix.lockfile.stamps import Stamps


def test_stamp_matches_until_the_file_changes(tmp_path: Path) -> None:
    engine = tmp_path / "a.engine"
    engine.write_bytes(b"engine bytes")
    sha = hashlib.sha256(b"engine bytes").hexdigest()
    assert sha256_file(engine) == sha
    stamps = Stamps.load(tmp_path)
    assert not stamps.matches(engine, 12, sha)
    stamps.record(engine, sha)
    stamps.save()

    reloaded = Stamps.load(tmp_path)
    assert reloaded.matches(engine, 12, sha)
    assert not reloaded.matches(engine, 12, "0" * 64)
    stat = engine.stat()
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert not reloaded.matches(engine, 12, sha)


def test_missing_or_garbled_state_is_empty(tmp_path: Path) -> None:
    (tmp_path / ".rtx-matrix").mkdir()
    (tmp_path / ".rtx-matrix" / "stamps.json").write_text("{garbled")
    stamps = Stamps.load(tmp_path)
    assert stamps.unchanged(tmp_path / "x") is None
    stamps.save()  # nothing changed: nothing written
    assert (tmp_path / ".rtx-matrix" / "stamps.json").read_text() == "{garbled"
