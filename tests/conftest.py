"""Shared test set-up. Tests marked `gpu` run only where TensorRT-RTX has a GPU to use.

No test writes to the home folder of whoever runs the suite (pre-commit's
`dont_write_to_home_directory` is the model): every test gets a home and cache folder of its
own under pytest's tmp folder, through the environment, so the CLI subprocesses a test starts
inherit them. Module-scoped fixtures run before any test's own, so they get one for the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def use_home(patch: pytest.MonkeyPatch, home: Path) -> None:
    """Point everything that finds the home or cache folder at `home` (not created here)."""
    patch.setenv("HOME", str(home))
    patch.setenv("USERPROFILE", str(home))  # what Path.home() reads on Windows
    patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    patch.setenv("RTX_MATRIX_CACHE_DIR", str(home / ".cache" / "rtx-matrix"))


@pytest.fixture(autouse=True, scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("session-home")
    with pytest.MonkeyPatch.context() as patch:
        use_home(patch, home)
        yield home


@pytest.fixture(autouse=True)
def dont_write_to_home_directory(
    session_home: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """This test's home; its cache is `<home>/.cache/rtx-matrix`."""
    home = tmp_path_factory.mktemp("home")
    use_home(monkeypatch, home)
    return home


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    # Asked once per session, and only when GPU tests were collected: NVML answers in ms.
    from matrix.gpu import discover, gpu_skip_reason

    reason = gpu_skip_reason(discover())
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU that TensorRT-RTX supports: {reason}")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def code_not_racy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if this process began importing rtx-matrix now, its files two seconds older: the
    pickle caches (`matrix.pickle_cache`) store and read nothing made by racy code."""
    import time

    from matrix import pickle_cache
    from matrix.file_stat import RACY_NS

    newest = max(stat.mtime_ns for _, stat in pickle_cache.code_stats())
    wait = newest + RACY_NS - time.time_ns()
    if wait > 0:
        time.sleep(wait / 1e9 + 0.01)
    monkeypatch.setattr(pickle_cache, "IMPORTED_AT_NS", time.time_ns())
    pickle_cache.code_as_imported.cache_clear()
    yield
    pickle_cache.code_as_imported.cache_clear()


@pytest.fixture(params=["posix", "portable"])
def local_pool_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once per local pool: `RTX_MATRIX_WORKERS` for this process and the
    builds it starts."""
    from matrix.build.pools import WORKERS_ENV

    kind: str = request.param
    monkeypatch.setenv(WORKERS_ENV, kind)
    return kind
