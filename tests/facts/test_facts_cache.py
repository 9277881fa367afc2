from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import matrix.facts.cache as facts_cache
from matrix.cache_dir import cache_dir
from matrix.facts.cache import FactsCache
from matrix.facts.onnx_inspect import ModelFileError, inspect_model
from matrix.facts.types import ModelFacts
from tests import modelgen


@pytest.fixture
def count_inspections(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Real inspections, recorded, so tests can tell a cache hit from a miss."""
    calls: list[Path] = []

    def recording(path: Path, file_sha256: str | None = None) -> ModelFacts:
        calls.append(path)
        return inspect_model(path, file_sha256)

    monkeypatch.setattr(facts_cache, "inspect_model", recording)
    return calls


def test_second_get_is_a_hit_with_equal_facts(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    model = modelgen.dynamic_batch_mlp(tmp_path / "m.onnx")
    cache = FactsCache(tmp_path / "cache")
    first = cache.get(model)
    second = FactsCache(tmp_path / "cache").get(model)
    assert second == first
    assert second.inputs[0].shape == ("batch", 16)
    assert len(count_inspections) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [cache.entry_path(model).name, facts_cache.BY_CONTENT])


def test_shape_inputs_survive_the_cache(tmp_path: Path, count_inspections: list[Path]) -> None:
    model = modelgen.shape_input_model(tmp_path / "m.onnx")
    assert FactsCache(tmp_path / "cache").get(model).shape_inputs == ("s",)
    assert FactsCache(tmp_path / "cache").get(model).shape_inputs == ("s",)
    assert len(count_inspections) == 1


def test_changed_model_is_inspected_again(tmp_path: Path, count_inspections: list[Path]) -> None:
    model = modelgen.mlp_fp32(tmp_path / "m.onnx", seed=0)
    cache = FactsCache(tmp_path / "cache")
    first = cache.get(model)
    modelgen.mlp_fp32(tmp_path / "m.onnx", seed=1)
    second = cache.get(model)
    assert len(count_inspections) == 2
    assert second.digest != first.digest
    assert second.graph_digest == first.graph_digest


def test_changed_external_data_is_inspected_again(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    model = modelgen.external_data_model(tmp_path / "m.onnx", size=4096)
    cache = FactsCache(tmp_path / "cache")
    first = cache.get(model)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(bytes(reversed(data.read_bytes())))
    second = cache.get(model)
    assert len(count_inspections) == 2
    assert second.weights_digest != first.weights_digest


def test_corrupt_entry_means_inspect_again_and_rewrite(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    model = modelgen.conv_fp16(tmp_path / "m.onnx")
    cache = FactsCache(tmp_path / "cache")
    facts = cache.get(model)
    entry = cache.entry_path(model)
    shutil.rmtree(tmp_path / "cache" / facts_cache.BY_CONTENT)  # the path's entry alone
    entry.write_text('{"version": 1, "path": ')
    assert cache.get(model) == facts
    assert json.loads(entry.read_text())["facts"]["digest"] == facts.digest
    shutil.rmtree(tmp_path / "cache" / facts_cache.BY_CONTENT)
    entry.write_text(json.dumps({"version": 1, "path": str(model), "facts": {}, "stamps": {}}))
    assert cache.get(model) == facts
    assert len(count_inspections) == 3


def test_unwritable_cache_directory_is_ignored(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = modelgen.conv_fp32(tmp_path / "m.onnx")
    assert FactsCache(blocker / "cache").get(model) == inspect_model(model)


def test_bad_model_raises_and_is_not_cached(tmp_path: Path) -> None:
    cache = FactsCache(tmp_path / "cache")
    with pytest.raises(ModelFileError, match="no such file"):
        cache.get(tmp_path / "missing.onnx")
    assert not (tmp_path / "cache").exists()


def test_default_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTX_MATRIX_CACHE_DIR", "/x/rtx")
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/xdg")
    assert cache_dir() == Path("/x/rtx")
    assert FactsCache().directory == Path("/x/rtx")
    monkeypatch.delenv("RTX_MATRIX_CACHE_DIR")
    assert cache_dir() == Path("/x/xdg/rtx-matrix")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/x/home")
    assert cache_dir() == Path("/x/home/.cache/rtx-matrix")


def test_a_hit_does_not_import_onnx(tmp_path: Path) -> None:
    model = modelgen.matmul_fp16(tmp_path / "m.onnx")
    FactsCache(tmp_path / "cache").get(model)
    script = (
        "import sys; from pathlib import Path; from matrix.facts.cache import FactsCache;"
        f"FactsCache(Path({str(tmp_path / 'cache')!r})).get(Path({str(model)!r}));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'numpy')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_warm_hits_neither_inspect_nor_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_inspections: list[Path]
) -> None:
    """What keeps a warm plan fast (its speed is measured by bench/bench_noop.py): a hit on a
    model whose stat is unchanged and not racy reads no model byte."""
    models = [modelgen.conv_fp16(tmp_path / f"m{i}.onnx", seed=i) for i in range(3)]
    for model in models:
        os.utime(model, ns=(10**18, 10**18))  # long before the entries are written
    cache = FactsCache(tmp_path / "cache")
    for model in models:
        cache.get(model)
    hashed: list[Path] = []
    monkeypatch.setattr(facts_cache, "content_digest", lambda path, *_: hashed.append(path))
    for model in models:
        FactsCache(tmp_path / "cache").get(model)
    assert (len(count_inspections), hashed) == (3, [])


def _rewrite_keeping_stat(path: Path, seed: int) -> None:
    """New weights, same size, inode and mtime: what a stat-keyed cache cannot see."""
    before = path.stat()
    modelgen.mlp_fp32(path, seed=seed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def test_racily_clean_entry_is_checked_by_content(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    model = modelgen.mlp_fp32(tmp_path / "m.onnx", seed=0)
    cache = FactsCache(tmp_path / "cache")
    first = cache.get(model)  # inspected right after writing: racy
    _rewrite_keeping_stat(model, seed=1)
    second = cache.get(model)
    assert second.digest != first.digest
    assert len(count_inspections) == 2


def test_aged_entry_trusts_the_stat(tmp_path: Path, count_inspections: list[Path]) -> None:
    model = modelgen.mlp_fp32(tmp_path / "m.onnx", seed=0)
    old = time.time_ns() - 10 * 1_000_000_000
    os.utime(model, ns=(old, old))
    cache = FactsCache(tmp_path / "cache")
    first = cache.get(model)
    assert json.loads(cache.entry_path(model).read_text())["racy"] is False
    _rewrite_keeping_stat(model, seed=1)
    # Like make: same size, mtime and inode mean unchanged; no file is read.
    assert cache.get(model) == first
    assert len(count_inspections) == 1


def test_node_findings_and_parser_verdict_survive_the_cache(tmp_path: Path) -> None:
    from matrix.facts.types import ParserCheck, ParserError

    model = modelgen.recurrent(tmp_path / "m.onnx")
    cache = FactsCache(tmp_path / "cache")
    facts = cache.get(model)
    assert [(n.kind, n.op) for n in facts.nodes] == [("fp32-gemm", "LSTM")]
    check = ParserCheck("1.7.1.116", (ParserError("n", "Op", "why"),))
    checked = cache.add_parser_check(model, facts, check)
    assert FactsCache(tmp_path / "cache").get(model) == checked
    assert checked.parser == check


def test_old_cache_entries_are_inspected_again(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    model = modelgen.conv_fp32(tmp_path / "m.onnx")
    cache = FactsCache(tmp_path / "cache")
    cache.get(model)
    entry = cache.entry_path(model)
    old = json.loads(entry.read_text())
    old["version"] = facts_cache.CACHE_VERSION - 1
    entry.write_text(json.dumps(old))
    for by_content in (tmp_path / "cache" / facts_cache.BY_CONTENT).iterdir():
        by_content.write_text(json.dumps({**json.loads(by_content.read_text()), **old}))
    FactsCache(tmp_path / "cache").get(model)
    assert len(count_inspections) == 2


def test_a_copy_elsewhere_is_known_by_its_bytes(
    tmp_path: Path, count_inspections: list[Path]
) -> None:
    """A fresh clone or another worktree: the facts of the same bytes, with this path; a
    copy whose external data differs is inspected."""
    model = modelgen.external_data_model(tmp_path / "a" / "m.onnx")
    cache = FactsCache(tmp_path / "cache")
    facts = cache.get(model)
    clone = tmp_path / "b"
    shutil.copytree(tmp_path / "a", clone)
    cached = FactsCache(tmp_path / "cache").peek(clone / "m.onnx")
    assert cached == replace(facts, path=str(clone / "m.onnx"))
    assert len(count_inspections) == 1
    data = clone / facts.external_files[0]
    data.write_bytes(data.read_bytes()[::-1])
    other = tmp_path / "c"
    shutil.copytree(clone, other)
    assert FactsCache(tmp_path / "cache").peek(other / "m.onnx") is None
    assert FactsCache(tmp_path / "cache").get(other / "m.onnx").digest != facts.digest
    assert len(count_inspections) == 2


class DigestsTaken:
    """Every sha256 hexdigest taken in this process while installed, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import hashlib

        real = hashlib.sha256
        self.digests: list[str] = []
        taken = self.digests

        class Recorded:
            def __init__(self, data: bytes = b"") -> None:
                self.inner = real(data)

            def update(self, data: Any) -> None:
                self.inner.update(data)

            def hexdigest(self) -> str:
                taken.append(self.inner.hexdigest())
                return taken[-1]

        monkeypatch.setattr(hashlib, "sha256", Recorded)


def aged(path: Path) -> Path:
    then = time.time() - 10  # out of the racy window (`matrix.file_stat`)
    os.utime(path, (then, then))
    return path


def test_a_new_model_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Looked up by its bytes first, then inspected: the lookup's sha256 serves as its
    digest (2 GB of embedded weights take 1.3 s to hash)."""
    import hashlib

    model = aged(modelgen.dynamic_batch_mlp(tmp_path / "m.onnx"))
    whole = hashlib.sha256(model.read_bytes()).hexdigest()
    taken = DigestsTaken(monkeypatch)
    facts = FactsCache(tmp_path / "cache").get(model)
    assert facts.digest == f"sha256:{whole}"
    assert taken.digests.count(whole) == 1


def test_a_model_rewritten_after_its_lookup_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    model = aged(modelgen.dynamic_batch_mlp(tmp_path / "m.onnx"))
    real = FactsCache._by_content

    def rewritten_meanwhile(self: FactsCache, path: Path) -> Any:
        found = real(self, path)
        modelgen.dynamic_batch_mlp(path, seed=7)  # another program writes it just then
        return found

    monkeypatch.setattr(FactsCache, "_by_content", rewritten_meanwhile)
    facts = FactsCache(tmp_path / "cache").get(model)
    assert facts.digest == "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()


def test_a_model_written_moments_ago_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within its clock's tick a file can change again without its stat moving: the
    lookup's sha256 cannot stand for what the inspection reads."""
    import hashlib

    model = modelgen.dynamic_batch_mlp(tmp_path / "m.onnx")
    whole = hashlib.sha256(model.read_bytes()).hexdigest()
    taken = DigestsTaken(monkeypatch)
    assert FactsCache(tmp_path / "cache").get(model).digest == f"sha256:{whole}"
    assert taken.digests.count(whole) == 2
