from __future__ import annotations

import hashlib
import os
import time
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


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_write_atomic_gives_the_usual_mode_not_mkstemps_0600(tmp_path: Path, umask: int) -> None:
    # A lockfile is committed and shared: it must get what any new file of this user gets.
    path = tmp_path / "m.lock"
    previous = os.umask(umask)
    try:
        write_atomic(path, "{}")
        write_atomic(tmp_path / "cache.json", "{}", durable=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "cache.json").stat().st_mode & 0o777 == 0o666 & ~umask


def refusing_replace(
    monkeypatch: pytest.MonkeyPatch, times: int, patience: float
) -> list[float]:
    """os.replace refusing `times` times as Windows does while a reader holds the target open
    (the retry is Windows' only: `patience` stands for its window here)."""
    import matrix.atomic

    tries: list[float] = []
    real = os.replace

    def replace(src: str, dst: str) -> None:
        tries.append(time.monotonic())
        if len(tries) <= times:
            raise PermissionError(13, "The process cannot access the file", dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(matrix.atomic, "REPLACE_PATIENCE", patience)
    return tries


def test_a_target_held_open_for_a_moment_is_replaced_once_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.lock"
    path.write_bytes(b"old")
    tries = refusing_replace(monkeypatch, times=3, patience=2.0)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and len(tries) == 4
    assert list(tmp_path.iterdir()) == [path]


def test_a_target_held_open_too_long_fails_clearly_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.lock"
    path.write_bytes(b"old")
    tries = refusing_replace(monkeypatch, times=1000, patience=0.2)
    with pytest.raises(PermissionError) as raised:
        write_atomic(path, b"new")
    assert str(raised.value) == (
        f"[Errno 13] cannot replace {path}: another program keeps it open (tried for 0.2 s)"
    )
    assert 0.2 <= tries[-1] - tries[0] < 1.0 and len(tries) < 10
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_on_posix_a_refused_replace_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matrix.atomic

    assert matrix.atomic.REPLACE_PATIENCE == 0.0  # only Windows refuses for a reader
    tries = refusing_replace(monkeypatch, times=1000, patience=0.0)
    with pytest.raises(PermissionError, match="The process cannot access the file"):
        write_atomic(tmp_path / "m.lock", b"new")
    assert len(tries) == 1
