from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from matrix.atomic import sha256_file, write_atomic


@pytest.mark.parametrize("data", [b"new engine", memoryview(b"new engine"), "new engine"])
def test_write_atomic_replaces_the_file_and_leaves_no_temp(
    tmp_path: Path, data: bytes | memoryview | str
) -> None:
    path = tmp_path / "out.engine"
    path.write_bytes(b"old")
    write_atomic(path, data)
    assert path.read_bytes() == b"new engine"
    assert list(tmp_path.iterdir()) == [path]


def test_write_atomic_creates_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "cache.json"
    write_atomic(path, "{}", durable=False)
    assert path.read_text() == "{}"


def test_write_atomic_failure_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.engine"
    path.write_bytes(b"old")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new engine")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_sha256_file_streams_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_make_durable_syncs_an_existing_file_and_refuses_a_missing_one(tmp_path: Path) -> None:
    from matrix.atomic import make_durable

    engine = tmp_path / "built.engine"
    engine.write_bytes(b"engine")
    make_durable(engine)
    assert engine.read_bytes() == b"engine"
    with pytest.raises(FileNotFoundError):
        make_durable(tmp_path / "gone.engine")
