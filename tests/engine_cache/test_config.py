"""Which cache a run uses: the manifest, RTX_MATRIX_CACHE, --cache, --no-cache, push."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix.engine_cache.config import choose_cache, credentials_in, display_url, folder_or_url
from matrix.errors import InputError, UsageError
from matrix.manifest.loader import load_manifest
from matrix.manifest.types import CacheSpec

IN_MANIFEST = CacheSpec("s3://team/engines", push=False)


def test_no_cache_anywhere_is_none() -> None:
    assert choose_cache(None, environ={}) is None


def test_the_manifest_alone() -> None:
    assert choose_cache(IN_MANIFEST, environ={}) == IN_MANIFEST


def test_environment_beats_manifest_and_flag_beats_environment(tmp_path: Path) -> None:
    env = {"RTX_MATRIX_CACHE": "gs://other/x"}
    assert choose_cache(IN_MANIFEST, environ=env) == CacheSpec("gs://other/x", push=False)
    chosen = choose_cache(IN_MANIFEST, url="az://third/y", environ=env)
    assert chosen == CacheSpec("az://third/y", push=False)
    assert choose_cache(IN_MANIFEST, url="az://third/y", disabled=True, environ=env) is None


def test_a_folder_path_is_a_url_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert choose_cache(None, url="cache", environ={}) == CacheSpec(str(tmp_path / "cache"))
    assert folder_or_url("~/c", "/x") == str(Path.home() / "c")
    assert folder_or_url("file:///srv/c", "/x") == "file:///srv/c"


def test_push_from_flag_then_environment_then_manifest() -> None:
    on = CacheSpec("/c", push=True)
    assert choose_cache(on, environ={"RTX_MATRIX_CACHE_PUSH": "0"}) == CacheSpec("/c", False)
    assert choose_cache(on, push=False, environ={}) == CacheSpec("/c", False)
    off = CacheSpec("/c", push=False)
    assert choose_cache(off, push=True, environ={"RTX_MATRIX_CACHE_PUSH": "0"}) == on
    with pytest.raises(UsageError, match="RTX_MATRIX_CACHE_PUSH='maybe': use 1 or 0"):
        choose_cache(on, environ={"RTX_MATRIX_CACHE_PUSH": "maybe"})


def test_http_caches_never_push() -> None:
    chosen = choose_cache(None, url="https://engines.example.com/team", push=True, environ={})
    assert chosen == CacheSpec("https://engines.example.com/team", push=False)


def test_credentials_stay_out_of_urls() -> None:
    assert credentials_in("s3://bucket/prefix") is None
    assert credentials_in("/home/me/cache") is None
    assert "credentials" in (credentials_in("https://me:secret@host/x") or "")
    assert "query string" in (credentials_in("az://c/p?sig=abc") or "")
    with pytest.raises(UsageError, match="credentials do not belong"):
        choose_cache(None, url="s3://key:secret@bucket/x", environ={})
    assert display_url("https://me:secret@host/x?sig=1") == "https://host/x"


def test_manifest_cache_is_loaded_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    models = "models:\n  - {name: m, onnx: m.onnx, targets: [default]}\n"
    manifest.write_text(f"version: 1\ncache: {{url: ../shared}}\n{models}")
    assert load_manifest(manifest).cache == CacheSpec(str(tmp_path.parent / "shared"), True)
    manifest.write_text(f"version: 1\ncache: {{url: 's3://b/p', push: false}}\n{models}")
    assert load_manifest(manifest).cache == CacheSpec("s3://b/p", push=False)
    manifest.write_text(f"version: 1\n{models}")
    assert load_manifest(manifest).cache is None


def test_manifest_cache_with_credentials_is_refused_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\ncache:\n  url: https://me:pw@host/x\n"
        "models:\n  - {name: m, onnx: m.onnx, targets: [default]}\n"
    )
    with pytest.raises(InputError) as caught:
        load_manifest(manifest)
    assert [str(p) for p in caught.value.problems] == [
        "m.yaml:3:3: $.cache.url: credentials do not belong in a cache URL: use the "
        "backend's environment"
    ]


def test_the_cache_key_changes_no_fingerprint(tmp_path: Path) -> None:
    from matrix.lockfile.fingerprint import plan_identity
    from matrix.plan.load import load_plan
    from tests import modelgen

    modelgen.conv_fp32(tmp_path / "m.onnx")
    manifest = tmp_path / "m.yaml"
    models = "models:\n  - {name: m, onnx: m.onnx, targets: [sm86]}\n"
    manifest.write_text(f"version: 1\n{models}")
    without = plan_identity(load_plan(manifest), "1.7.1.116")
    manifest.write_text(f"version: 1\ncache: {{url: s3://b/p}}\n{models}")
    assert plan_identity(load_plan(manifest), "1.7.1.116") == without
