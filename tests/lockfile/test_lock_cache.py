"""The lock cache: a lock parsed once is remembered until the lockfile is rewritten."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix import pickle_cache
from matrix.atomic import write_atomic
from matrix.errors import InputError
from matrix.file_stat import FileStat, file_stat
from matrix.lockfile import cache as lock_cache
from matrix.lockfile.io import lock_to_json, write_lock
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.survey import read_known_lock
from tests.lockfile.test_lockfile import entry, lock

pytestmark = pytest.mark.usefixtures("code_not_racy")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def aged_lock(path: Path, seconds: float = 0.5) -> FileStat:
    write_lock(path, lock(**{"a@sm86": entry("a", seconds=seconds)}))
    old = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(old, old))
    stat = file_stat(path)
    assert stat is not None
    return stat


def read(path: Path) -> str:
    found = read_known_lock(path, file_stat(path), Stamps.load(path.parent))
    assert found is not None
    return lock_to_json(found)


def test_a_parsed_lock_is_remembered_until_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    stat = aged_lock(path)
    assert lock_cache.load(path, stat) is None
    text = read(path)
    remembered = lock_cache.load(path, stat)
    assert remembered is not None and lock_to_json(remembered) == text
    assert remembered.engines["a@sm86"].options["builder"] == {"optimization_level": 3}
    write_lock(path, lock(**{"a@sm86": entry("a", seconds=0.7)}))  # same size, new inode
    assert file_stat(path) != stat
    assert lock_cache.load(path, file_stat(path)) is None  # type: ignore[arg-type]
    assert '"build_seconds": 0.7' in read(path)


def test_a_racy_lock_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    write_lock(path, lock(**{"a@sm86": entry("a", seconds=0.5)}))
    before = path.stat()
    read(path)
    assert lock_cache.load(path, file_stat(path)) is None  # type: ignore[arg-type]
    path.write_text(path.read_text().replace('"build_seconds": 0.5', '"build_seconds": 0.7'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert file_stat(path) == FileStat.of(before)
    assert '"build_seconds": 0.7' in read(path)


def test_an_aged_lock_is_trusted_by_its_stat_like_make(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    stat = aged_lock(path)
    text = read(path)
    path.write_text(text.replace('"build_seconds": 0.5', '"build_seconds": 0.7'))
    os.utime(path, ns=(stat.mtime_ns, stat.mtime_ns))
    assert read(path) == text


def test_a_lock_that_fails_its_checks_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    aged_lock(path)
    text = path.read_text().replace('"size": 1234', '"size": "big"')
    write_atomic(path, text)
    old = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(old, old))
    with pytest.raises(InputError, match="does not match the lockfile schema"):
        read(path)
    assert lock_cache.load(path, file_stat(path)) is None  # type: ignore[arg-type]


def test_a_checked_lock_is_stamped_so_the_schema_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    stat = aged_lock(path)
    stamps = Stamps.load(tmp_path)
    assert stamps.unchanged(path) is None  # written by someone else: no stamp yet
    read_known_lock(path, stat, stamps)
    assert stamps.unchanged(path) == (stat, "")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in for rtx-matrix's own code folder, whose files a test may edit."""
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "types.py").write_text("FIELDS = 1\n")
    old = time.time_ns() - 10 * 10**9
    os.utime(folder / "types.py", ns=(old, old))
    monkeypatch.setattr(pickle_cache, "_PACKAGE", str(folder))
    pickle_cache.code_as_imported.cache_clear()
    yield folder
    pickle_cache.code_as_imported.cache_clear()


def test_a_lock_parsed_by_other_code_is_not_read(tmp_path: Path, package: Path) -> None:
    path = tmp_path / "m.lock"
    stat = aged_lock(path)
    read(path)
    assert lock_cache.load(path, stat) is not None
    (package / "types.py").write_text("FIELDS = 2\n")
    pickle_cache.code_as_imported.cache_clear()
    assert lock_cache.load(path, stat) is None
    read(path)
    assert lock_cache.load(path, stat) is None  # the edited code is racy: nothing stored


def test_a_truncated_or_shared_entry_is_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    stat = aged_lock(path)
    read(path)
    entry_file = pickle_cache.entry_path("locks", str(path))
    entry_file.chmod(0o666)
    assert lock_cache.load(path, stat) is None
    entry_file.chmod(0o600)
    assert lock_cache.load(path, stat) is not None
    entry_file.write_bytes(entry_file.read_bytes()[:-10])
    assert lock_cache.load(path, stat) is None
