"""A folder-cache engine this user hashed is copied without hashing while its stat holds;
any change to it, or a change too recent to vouch for, brings the hash back. Real builds,
a real folder cache."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from matrix.cache_dir import cache_dir
from matrix.lockfile.io import read_lock
from tests.engine_cache.conftest import CELLS, Project

pytestmark = pytest.mark.slow

AGED = 10.0
"""Seconds a cache file is set back: older than the racy window (`matrix.file_stat`)."""


def fetched(out: str) -> list[str]:
    return sorted(line.split()[2] for line in out.splitlines() if "] fetched " in line)


def built(out: str) -> list[str]:
    return sorted(line.split()[2] for line in out.splitlines() if "] built " in line)


def engine_files(cache: Path) -> list[Path]:
    return sorted((cache / "v1" / "engines").glob("*.engine"))


def age(paths: list[Path]) -> None:
    then = time.time() - AGED
    for path in paths:
        os.utime(path, (then, then))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def marks() -> list[str]:
    folder = cache_dir() / "verified"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class Hashing:
    """Counts the engines the transfer module reads through sha256."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import matrix.engine_cache.transfer as transfer

        self.count = 0
        real = transfer._receive

        def counted(*args: Any) -> None:
            self.count += 1
            real(*args)

        monkeypatch.setattr(transfer, "_receive", counted)


@pytest.fixture
def pushed(project: Project, tmp_path: Path, capsys: Any) -> Path:
    """The project built into a folder cache whose engines are older than the racy window."""
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2") == 0
    age(engine_files(cache))
    capsys.readouterr()
    return cache


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "portable"])
def test_an_engine_hashed_once_is_then_copied_without_hashing(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch,
    sendfile: bool,
) -> None:
    import matrix.engine_cache.transfer as transfer

    monkeypatch.setattr(transfer, "_SENDFILE", sendfile)  # False: the copy off Linux
    hashing = Hashing(monkeypatch)
    first = project.clone(tmp_path / "first")
    assert first.run("build", "-j2") == 0
    assert fetched(capsys.readouterr().out) == list(CELLS)
    assert hashing.count == len(CELLS)
    assert marks() == [p.stem for p in engine_files(pushed)]

    second = project.clone(tmp_path / "second")
    assert second.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert fetched(out) == list(CELLS) and err == ""
    assert hashing.count == len(CELLS)  # not one more
    for cell in CELLS:
        assert second.engine(cell).read_bytes() == project.engine(cell).read_bytes()
    assert second.lock.read_text() == project.lock.read_text()
    assert second.run("status", "--check", "--verify") == 0


@pytest.mark.parametrize("mtime", ["moved", "put back"])
def test_an_engine_changed_after_its_mark_is_hashed_and_rejected(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any, mtime: str
) -> None:
    assert project.clone(tmp_path / "first").run("build", "-j2") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    good = lock.engines["a@sm86"]
    blob = pushed / "v1" / "engines" / f"{good.sha256}.engine"
    inode = blob.stat().st_ino
    poison = bytearray(blob.read_bytes())
    poison[len(poison) // 2] ^= 0xFF  # same size, same header, same file
    old = blob.stat()
    with open(blob, "r+b") as handle:
        handle.write(poison)
    if mtime == "put back":  # as a tool that keeps timestamps would: only the ctime moves
        os.utime(blob, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (blob.stat().st_ino, blob.stat().st_size) == (inode, old.st_size)
    assert (blob.stat().st_mtime_ns == old.st_mtime_ns) == (mtime == "put back")
    capsys.readouterr()

    clone = project.clone(tmp_path / "second")
    assert clone.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert built(out) == ["a@sm86"] and fetched(out) == ["a@sm89", "b@sm86"]
    assert err == (
        f"warning: a@sm86: cache entry rejected: the engine's sha256 is "
        f"{hashlib.sha256(poison).hexdigest()[:12]}, not {good.sha256[:12]} as recorded "
        "(corrupt or poisoned entry)\n"
    )
    assert clone.engine("a@sm86").read_bytes() != bytes(poison)


def test_an_engine_written_moments_ago_gets_no_mark(
    project: Project, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the racy window a file can change again without its stat moving."""
    project.write({"url": str(tmp_path / "cache")})
    assert project.run("build", "-j2") == 0
    hashing = Hashing(monkeypatch)
    for name in ("first", "second"):
        assert project.clone(tmp_path / name).run("build", "-j2") == 0
        assert fetched(capsys.readouterr().out) == list(CELLS)
    assert hashing.count == 2 * len(CELLS)
    assert marks() == []


def test_a_mark_vouches_for_one_file_only(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same engine in another cache folder, with the same size and mtime, is hashed."""
    assert project.clone(tmp_path / "first").run("build", "-j2") == 0
    capsys.readouterr()
    other = tmp_path / "other-cache"
    os.rename(pushed, other)
    project.write({"url": str(other)})
    hashing = Hashing(monkeypatch)
    clone = project.clone(tmp_path / "second")
    assert clone.run("build", "-j2", "--no-push") == 0
    assert fetched(capsys.readouterr().out) == list(CELLS)
    assert hashing.count == len(CELLS)


def test_a_fetch_leaves_the_engine_file_as_it_was(
    project: Project, pushed: Path, tmp_path: Path
) -> None:
    """Only its record is touched for `cache gc`: the engine's stat is what a mark holds."""
    lock = read_lock(project.lock)
    assert lock is not None
    records = pushed / "v1" / "records"
    age(sorted(records.glob("*.json")))
    before = {p: p.stat().st_mtime_ns for p in engine_files(pushed)}
    aged = {p: p.stat().st_mtime for p in records.glob("*.json")}
    assert project.clone(tmp_path / "clone").run("build", "-j2") == 0
    assert {p: p.stat().st_mtime_ns for p in engine_files(pushed)} == before
    assert all(p.stat().st_mtime > aged[p] + AGED / 2 for p in aged)


@pytest.mark.parametrize("change", ["content", "ctime only"])
def test_an_engine_changed_while_copied_is_copied_again_and_hashed(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """Another program writes the file during the copy, or only moves its ctime (a gc
    unlinking it, a chmod): the copy is done again and hashed; only wrong bytes are refused."""
    import matrix.engine_cache.transfer as transfer

    assert project.clone(tmp_path / "first").run("build", "-j2") == 0
    capsys.readouterr()
    lock = read_lock(project.lock)
    assert lock is not None
    good = lock.engines["a@sm86"]
    blob = pushed / "v1" / "engines" / f"{good.sha256}.engine"
    real = transfer._copy_range
    hashing = Hashing(monkeypatch)

    def meddled(source: Any, fd: int, offset: int, count: int) -> int:
        if os.path.samefile(source.fileno(), blob) and not offset:
            old = blob.stat()
            if change == "content":
                with open(blob, "r+b") as handle:
                    handle.seek(offset + count - 1)
                    handle.write(b"!")
            os.utime(blob, ns=(old.st_atime_ns, old.st_mtime_ns))
        return real(source, fd, offset, count)

    monkeypatch.setattr(transfer, "_copy_range", meddled)
    clone = project.clone(tmp_path / "second")
    assert clone.run("build", "-j2", "--no-push") == 0
    out, err = capsys.readouterr()
    assert hashing.count == 1
    if change == "content":
        poison = blob.read_bytes()
        assert built(out) == ["a@sm86"] and fetched(out) == ["a@sm89", "b@sm86"]
        assert err == (
            f"warning: a@sm86: cache entry rejected: the engine's sha256 is "
            f"{hashlib.sha256(poison).hexdigest()[:12]}, not {good.sha256[:12]} as recorded "
            "(corrupt or poisoned entry)\n"
        )
    else:
        assert fetched(out) == list(CELLS) and err == ""
        assert sha256_of(clone.engine("a@sm86")) == good.sha256
    assert clone.run("status", "--check", "--verify") == 0


def test_a_filesystem_without_sendfile_gets_the_plain_copy(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sendfile stands in refusing with EINVAL, as some FUSE and network filesystems do."""
    import errno

    assert project.clone(tmp_path / "first").run("build", "-j2") == 0
    capsys.readouterr()
    refused = []

    def no_sendfile(*args: Any) -> int:
        refused.append(args)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", no_sendfile, raising=False)
    clone = project.clone(tmp_path / "second")
    assert clone.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert fetched(out) == list(CELLS) and err == "" and refused
    for cell in CELLS:
        assert clone.engine(cell).read_bytes() == project.engine(cell).read_bytes()


def test_an_entry_just_fetched_is_the_last_that_gc_removes(
    project: Project, pushed: Path, tmp_path: Path, capsys: Any
) -> None:
    """The record's touch alone marks the entry as used: gc keeps it over the others, though
    it was the oldest."""
    lock = read_lock(project.lock)
    assert lock is not None
    age(sorted((pushed / "v1" / "records").glob("*.json")))
    kept = lock.engines["a@sm89"]
    oldest = time.time() - 10 * AGED
    for path in (pushed / "v1" / "records" / f"{kept.fingerprint}.json",
                 pushed / "v1" / "engines" / f"{kept.sha256}.engine"):
        os.utime(path, (oldest, oldest))
    clone = project.clone(tmp_path / "clone")
    assert clone.run("cache", "pull", "a@sm89") == 0
    keep_bytes = kept.size + (pushed / "v1" / "records" / f"{kept.fingerprint}.json").stat().st_size
    capsys.readouterr()
    assert project.run("cache", "gc", "--max-size", str(keep_bytes)) == 0
    assert capsys.readouterr().out.startswith("removed 2 entries")
    assert [p.stem for p in engine_files(pushed)] == [kept.sha256]
    assert [p.stem for p in (pushed / "v1" / "records").glob("*.json")] == [kept.fingerprint]
