"""The lock book: every finished cell on disk at once, backing off only when writes are slow."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from matrix.lockfile import book as book_module
from matrix.lockfile.book import LockBook
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, PlanIdentity
from tests.lockfile.test_lockfile import entry


def header() -> Lock:
    return Lock("0.1.0", "1.7.1.116", "m.yaml", PlanIdentity("e" * 64, ()))


def on_disk(path: Path) -> list[str]:
    return sorted(json.loads(path.read_text())["engines"])


def test_lock_book_writes_every_cell_then_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "m.lock"
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"x")
    book = LockBook(lock, header(), {"old@sm86": entry("old")}, Stamps.load(tmp_path), None)
    book.add("a@sm86", entry("a"), engine)
    assert on_disk(lock) == ["a@sm86", "old@sm86"]
    book.drop(["old@sm86"])
    assert on_disk(lock) == ["a@sm86"]

    # Every write now counts as slow (as for a lock of thousands of entries) and backs off.
    monkeypatch.setattr(book_module, "SLOW_WRITE", -1.0)
    monkeypatch.setattr(book_module, "WRITE_BACKOFF", 1e9)
    monkeypatch.setattr(book_module, "BACKOFF_ENTRIES", 0)
    book.drop(["a@sm86"])  # drops always write: an engine is about to be replaced
    book.add("b@sm86", entry("b"), engine)  # delayed
    assert on_disk(lock) == []
    book.flush()
    assert on_disk(lock) == ["b@sm86"]


def test_lock_book_leaves_an_unchanged_lock_alone(tmp_path: Path) -> None:
    lock = tmp_path / "m.lock"
    from matrix.lockfile.io import write_lock

    existing = Lock(**{**header().__dict__, "engines": MappingProxyType({"a@sm86": entry("a")})})
    write_lock(lock, existing)
    before = lock.stat().st_mtime_ns
    book = LockBook(lock, header(), existing.engines, Stamps.load(tmp_path), existing)
    book.flush()
    assert lock.stat().st_mtime_ns == before


def test_a_small_lock_never_backs_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow write of a small lock is a busy disk, not a big lock: every cell still lands."""
    monkeypatch.setattr(book_module, "SLOW_WRITE", -1.0)
    monkeypatch.setattr(book_module, "WRITE_BACKOFF", 1e9)
    lock = tmp_path / "m.lock"
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"x")
    book = LockBook(lock, header(), {}, Stamps.load(tmp_path), None)
    book.add("a@sm86", entry("a"), engine)
    book.add("b@sm86", entry("b"), engine)
    assert on_disk(lock) == ["a@sm86", "b@sm86"]
