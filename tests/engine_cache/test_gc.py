"""`cache gc` on a real folder cache: least recently used entries out first, leftovers of
killed pushes after an hour, object stores refused."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from matrix.build.progress import size_text
from matrix.cli import main
from matrix.engine_cache.gc import GRACE, collect_garbage
from matrix.engine_cache.record import record_of
from matrix.engine_cache.store import EngineStore
from matrix.errors import UsageError
from matrix.manifest.types import CacheSpec
from tests.engine_cache.test_record import ENTRY

NOW = time.time()


def put(store: EngineStore, name: str, size: int, age: float) -> tuple[Path, Path]:
    """An entry whose engine is `size` bytes of `name`, last used `age` seconds ago."""
    import hashlib

    data = name.encode() * (size // len(name))
    sha = hashlib.sha256(data).hexdigest()
    engine = Path(store.engine_path(sha))
    local = engine.parent.parent / f"{name}.src"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    store.put_engine(str(local), sha, len(data))
    local.unlink()
    key = hashlib.sha256(f"key-{name}".encode()).hexdigest()
    entry = replace(ENTRY, fingerprint=key, sha256=sha, size=len(data))
    store.put_record(record_of(entry, "1.7.1.116", "", "0.1.0"))
    record = Path(store.record_path(key))
    for path in (engine, record):
        os.utime(path, (NOW - age, NOW - age))
    return record, engine


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    store = EngineStore(CacheSpec(str(tmp_path / "cache")))
    old = put(store, "old", 40_000, 3000)
    middle = put(store, "middle", 40_000, 2000)
    new = put(store, "new", 40_000, 1000)
    report = collect_garbage(store, 90_000, now=NOW)
    assert (report.removed_entries, report.kept_entries) == (1, 2)
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in (*middle, *new))
    assert report.kept_bytes <= 90_000
    assert collect_garbage(store, 0, now=NOW).kept_entries == 0
    assert not list((tmp_path / "cache").rglob("*.engine"))


def test_an_engine_two_records_share_stays_until_both_go(tmp_path: Path) -> None:
    store = EngineStore(CacheSpec(str(tmp_path / "cache")))
    record, engine = put(store, "shared", 30_000, 3000)
    other = Path(store.record_path("ab" * 32))
    other.write_bytes(record.read_bytes().replace(record.stem.encode(), b"ab" * 32))
    os.utime(other, (NOW - 100, NOW - 100))
    collect_garbage(store, 31_500, now=NOW)  # 30 kB engine, two ~1.2 kB records: one goes
    assert not record.exists() and other.exists() and engine.exists()


def test_leftovers_of_killed_pushes_go_after_an_hour(tmp_path: Path) -> None:
    store = EngineStore(CacheSpec(str(tmp_path / "cache")))
    record, engine = put(store, "kept", 10_000, 10)
    folder = engine.parent
    fresh, stale = folder / ".x.engine.tmp-host-1-aa", folder / ".y.engine.tmp-host-2-bb"
    orphan_new, orphan_old = folder / ("1" * 64 + ".engine"), folder / ("2" * 64 + ".engine")
    for path, age in ((fresh, 10), (stale, GRACE + 10), (orphan_new, 10),
                      (orphan_old, GRACE + 10)):
        path.write_bytes(b"x" * 100)
        os.utime(path, (NOW - age, NOW - age))
    collect_garbage(store, 10**9, now=NOW)
    assert fresh.exists() and orphan_new.exists() and record.exists() and engine.exists()
    assert not stale.exists() and not orphan_old.exists()


def test_gc_refuses_object_stores() -> None:
    with pytest.raises(UsageError, match="cache gc works on folder caches"):
        collect_garbage(EngineStore(CacheSpec("memory://engines")), 1)


def test_the_command(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = EngineStore(CacheSpec(str(tmp_path / "cache")))
    record, engine = put(store, "a", 20_000, 100)
    assert main(["cache", "gc", "--max-size", "1MB", "--cache", "cache"]) == 0
    size = size_text(record.stat().st_size + engine.stat().st_size)
    assert capsys.readouterr().out == f"removed 0 entries (0 B); 1 entries left ({size})\n"
    assert main(["cache", "gc", "--max-size", "1kB", "--cache", "cache"]) == 0
    assert capsys.readouterr().out == f"removed 1 entries ({size}); 0 entries left (0 B)\n"
    assert main(["cache", "gc", "--max-size", "lots", "--cache", "cache"]) == 2
    assert "--max-size 'lots' is not a size" in capsys.readouterr().err
