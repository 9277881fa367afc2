"""The lock's `source` field: written on its own line, read back, absent in older locks,
and no conflict when two shards got the same engine from different places."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from matrix.lockfile.io import lock_from_json, lock_to_json, read_lock
from matrix.lockfile.merge import merge_files
from tests.lockfile.test_merge import entry, shard_lock, write


def test_source_is_written_read_and_checked_by_the_schema(tmp_path: Path) -> None:
    fetched = replace(entry("a@sm86"), source="s3://team/engines")
    text = lock_to_json(shard_lock(fetched, entry("b@sm86")))
    assert '      "source": "s3://team/engines",\n' in text
    assert '      "source": "built",\n' in text
    lock = lock_from_json(text)  # with the JSON Schema
    assert lock.engines["a@sm86"].source == "s3://team/engines"
    assert lock.engines["b@sm86"].source == "built"


def test_a_lock_from_before_the_cache_reads_as_built(tmp_path: Path) -> None:
    data = json.loads(lock_to_json(shard_lock(entry("a@sm86"))))
    del data["engines"]["a@sm86"]["source"]
    path = tmp_path / "old.lock"
    path.write_text(json.dumps(data))
    lock = read_lock(path)
    assert lock is not None and lock.engines["a@sm86"].source == "built"


def test_one_engine_built_by_one_shard_and_fetched_by_another_merges(tmp_path: Path) -> None:
    built = entry("a@sm86")
    fetched = replace(built, source="s3://team/engines", build_seconds=9.0)
    one = write(tmp_path / "1.lock", shard_lock(built, entry("b@sm86")))
    two = write(tmp_path / "2.lock", shard_lock(fetched, entry("c@default"), entry("d@sm89"),
                                                shard="2/2"))
    merged = merge_files([one, two], tmp_path / "merged.lock")
    again = merge_files([two, one], tmp_path / "merged2.lock")
    assert merged.engines["a@sm86"].sha256 == built.sha256
    assert lock_to_json(merged) == lock_to_json(again)
