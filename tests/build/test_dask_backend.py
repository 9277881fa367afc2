"""DaskBackend on a real local cluster (2 CPU workers + 1 worker advertising a fake GPU)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from matrix.build.engine_header import read_header  # noqa: E402
from matrix.build.memory import GiB, MiB  # noqa: E402
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent  # noqa: E402
from matrix.build.pools.dask_cluster import NO_GPU_WORKER, DaskBackend  # noqa: E402
from matrix.build.pools.posix import WorkerPool  # noqa: E402
from tests import modelgen  # noqa: E402
from tests.factories import build_request as request  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import Nanny, Scheduler, SpecCluster

    def worker(**options: Any) -> dict[str, Any]:
        return {"cls": Nanny, "options": {"nthreads": 1, **options}}

    spec = {"cpu-0": worker(), "cpu-1": worker(), "gpu-0": worker(resources={"GPU": 1})}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    # distributed ships no annotations for SpecCluster.
    cluster = SpecCluster(  # type: ignore[no-untyped-call]
        workers=spec, scheduler=scheduler, silence_logs=50
    )
    with cluster as running:
        yield running


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as connected:
        connected.wait_for_workers(3, timeout=60)
        yield connected


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "fp16": modelgen.matmul_fp16(folder / "fp16.onnx"),
        "slow": modelgen.slow_conv_stack(folder / "slow.onnx"),
    }


def gpu_worker(client: Any) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return str(next(addr for addr, info in workers.items() if info["resources"].get("GPU")))


def four_cells(tmp_path: Path, model: Path) -> list[BuildRequest]:
    targets: list[tuple[str, ...]] = [(), ("sm86",), ("sm75",), ("sm89", "sm120")]
    return [request(tmp_path, model, f"cell{i}", ccs=ccs) for i, ccs in enumerate(targets)]


def run(backend: Any, requests: list[BuildRequest]) -> tuple[dict[str, BuildResult], list[str]]:
    """Results by cell, and the order of events and results as the caller saw them."""
    seen: list[str] = []
    results = {}

    def on_event(event: ProgressEvent) -> None:
        if event.kind in ("start", "end"):
            seen.append(f"{event.kind} {event.cell_id}")

    for req in requests:
        backend.submit(req)
    for result in backend.results(on_event):
        seen.append(f"result {result.cell_id}")
        results[result.cell_id] = result
    return results, seen


def test_dask_builds_same_engines_as_local_worker_pool(
    client: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    local_dir, dask_dir = tmp_path / "local", tmp_path / "dask"
    with WorkerPool(2, timeout=60) as pool:
        local, _ = run(pool, four_cells(local_dir, models["fp16"]))
    with DaskBackend(client, timeout=60) as backend:
        assert backend.jobs == 6  # two cells in flight per worker thread, 3 workers
        remote, seen = run(backend, four_cells(dask_dir, models["fp16"]))
    assert sorted(remote) == sorted(local) == ["cell0", "cell1", "cell2", "cell3"]
    for cell, result in remote.items():
        assert result.ok, result.error
        assert result.header_mask == local[cell].header_mask
        engine = dask_dir / "engines" / f"{cell}.engine"
        assert hashlib.sha256(engine.read_bytes()).hexdigest() == result.sha256
        assert read_header(engine).mask == result.header_mask
        assert (dask_dir / "engines" / "logs" / f"{cell}.log").is_file()
        # Progress crossed the cluster, and in order: start, end, then the result.
        assert seen.index(f"start {cell}") < seen.index(f"end {cell}") < seen.index(
            f"result {cell}")
    assert [remote[c].header_mask for c in sorted(remote)] == [0x7E, 0x04, 0x01, 0x18]


def test_workers_without_the_output_folder_send_engines_back(
    client: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    cells = four_cells(tmp_path, models["fp16"])[:2]
    with DaskBackend(client, timeout=60, shared_output=False) as backend:
        results, _ = run(backend, cells)
    for req in cells:
        result = results[req.cell_id]
        assert result.ok, result.error
        data = Path(req.engine_path).read_bytes()
        assert len(data) == result.size
        assert hashlib.sha256(data).hexdigest() == result.sha256
        assert "[" in Path(req.log_path).read_text()  # the builder's log, written by the client
    assert not list((tmp_path / "engines").glob(".*.tmp*"))


def test_gpu_cells_run_only_on_the_gpu_worker(
    client: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    cells = [
        request(tmp_path, models["fp16"], "weightless", ccs=("sm86",), weightless=True),
        request(tmp_path, models["fp16"], "current", use_gpu=True),
    ]
    with DaskBackend(client, timeout=60) as backend:
        results, _ = run(backend, cells)
        assert backend.ran_on == {"weightless": gpu_worker(client), "current": gpu_worker(client)}
    # No GPU on this host: the library itself refuses, and says so in its own words.
    for result in results.values():
        assert not result.ok
        assert result.error is not None and "Error Code" in result.error


def test_gpu_cell_without_gpu_worker_fails_at_once_and_cpu_cells_still_build(
    models: dict[str, Path], tmp_path: Path
) -> None:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as small, \
            distributed.Client(small) as no_gpu:
        gpu = request(tmp_path, models["fp16"], "gpu", ccs=("sm86",), weightless=True)
        cpu = request(tmp_path, models["fp16"], "cpu", ccs=("sm86",))
        with DaskBackend(no_gpu, timeout=60) as backend:
            started = time.monotonic()
            backend.submit(gpu)
            backend.submit(cpu)
            first = next(backend.results())
            assert (first.cell_id, first.ok, first.error) == ("gpu", False, NO_GPU_WORKER)
            assert time.monotonic() - started < 1.0
            rest = list(backend.results())
    assert [(r.cell_id, r.ok) for r in rest] == [("cpu", True)]


def test_timeout_and_builder_crash_fail_only_their_cell(
    client: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    hung = request(tmp_path, models["slow"], "hung")
    with DaskBackend(client, timeout=0.5) as backend:
        results, _ = run(backend, [hung])
    assert results["hung"].error == "timed out after 0.5 s"

    crash = request(tmp_path, models["slow"], "crash")
    after = request(tmp_path, models["fp16"], "after")
    with DaskBackend(client, timeout=60) as backend:
        backend.submit(crash)

        def kill_builder(event: ProgressEvent) -> None:
            if event.kind == "start" and event.cell_id == "crash":
                os.kill(event.pid, signal.SIGKILL)

        crashed = list(backend.results(kill_builder))
        backend.submit(after)
        later = list(backend.results())
    assert [(r.cell_id, r.error) for r in crashed] == [("crash", "worker died: signal 9 (SIGKILL)")]
    assert [(r.cell_id, r.ok) for r in later] == [("after", True)]
    assert "rtx-matrix: worker died: signal 9 (SIGKILL)" in Path(crash.log_path).read_text()
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 3  # no Dask worker was lost


def test_killed_dask_worker_retries_or_fails_only_its_cell(
    client: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    import psutil  # type: ignore[import-untyped]

    slow = request(tmp_path, models["slow"], "slow")
    quick = four_cells(tmp_path, models["fp16"])[:2]
    orphans: list[int] = []

    def kill_worker(event: ProgressEvent) -> None:
        if event.kind == "start" and event.cell_id == "slow" and not orphans:
            orphans.append(event.pid)
            worker_pid = psutil.Process(event.pid).ppid()  # the Dask worker running the child
            os.kill(worker_pid, signal.SIGKILL)

    with DaskBackend(client, timeout=60) as backend:
        backend.submit(slow)
        for req in quick:
            backend.submit(req)
        results = {r.cell_id: r for r in backend.results(kill_worker)}
    assert orphans, "the slow cell never started"
    # The builder child dies with its worker instead of building on unseen.
    assert not psutil.pid_exists(orphans[0]) or psutil.Process(orphans[0]).status() == "zombie"
    assert sorted(results) == ["cell0", "cell1", "slow"]
    assert results["cell0"].ok and results["cell1"].ok
    # Dask reschedules a dead worker's task; if that fails too, only this cell says so.
    assert results["slow"].ok or "KilledWorker" in (results["slow"].error or "")


def build_knows_dask() -> bool:
    import argparse

    from matrix.cli import make_parser

    commands = next(a for a in make_parser()._actions
                    if isinstance(a, argparse._SubParsersAction))
    return "--executor" in commands.choices["build"]._option_string_actions


def test_dask_build_writes_the_same_lock_entries_as_a_local_build(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    if not build_knows_dask():
        pytest.skip("`build --executor dask` is not wired into the build command yet")
    from matrix.cli import main
    from matrix.lockfile.io import read_lock
    from tests.lockfile.test_merge import comparable, shard_project

    local = shard_project(tmp_path / "local")
    assert main(["build", "-j2", "-q", str(local)]) == 0
    remote = shard_project(tmp_path / "dask")
    assert main(["build", "-q", "--executor", "dask", "--scheduler", cluster.scheduler_address,
                 str(remote)]) == 0
    local_lock, dask_lock = read_lock(local.with_suffix(".lock")), read_lock(
        remote.with_suffix(".lock"))
    assert local_lock is not None and dask_lock is not None
    assert len(dask_lock.engines) == 5
    assert comparable(dask_lock) == comparable(local_lock)


def test_cells_ask_for_their_expected_peak_as_the_memory_resource(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One worker with two threads and MEMORY for one cell: two cells build one after the
    other; a cell needing more than any worker has asks for all of it, and still builds,
    with a warning."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0",
                                  resources={"MEMORY": 1000 * MiB}) as one, \
            distributed.Client(one) as memory_client:
        cells = [
            request(tmp_path, models["fp16"], "a", ccs=("sm86",), expected_peak_bytes=600 * MiB),
            request(tmp_path, models["fp16"], "b", ccs=("sm89",), expected_peak_bytes=600 * MiB),
            request(tmp_path, models["fp16"], "huge", expected_peak_bytes=5 * GiB),
        ]
        with DaskBackend(memory_client, timeout=60) as backend:
            results, seen = run(backend, cells)
    assert all(result.ok for result in results.values()), results
    starts_and_ends = [line.split()[0] for line in seen if not line.startswith("result")]
    assert starts_and_ends == ["start", "end"] * 3  # never two building at once
    assert capsys.readouterr().err.splitlines() == [
        "warning: huge needs about 5.0 GiB of memory, more than the largest Dask worker's "
        "MEMORY of 1000 MiB: it builds alone"
    ]


GPU_MANIFEST = """\
version: 1
output: engines
models:
  - name: m
    onnx: models/m.onnx
    targets: [sm86, current]
    weightless: [false, true]
"""


def test_a_coordinator_without_a_gpu_sends_gpu_cells_to_the_cluster(
    cluster: Any, client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """This host has no GPU: a weightless cell still goes to the cluster's GPU worker (where
    the library itself refuses: that worker has no GPU either); a `current` cell is
    skipped, its CC being the building machine's."""
    from matrix.cli import main
    from matrix.lockfile.io import read_lock
    from matrix.lockfile.survey import CURRENT_ON_CLUSTER

    modelgen.matmul_fp16(tmp_path / "models" / "m.onnx")
    manifest = tmp_path / "rtx-matrix.yaml"
    manifest.write_text(GPU_MANIFEST)
    code = main(["build", "--executor", "dask", "--scheduler", cluster.scheduler_address,
                 "--keep-going", str(manifest)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "] built m@sm86 in " in out
    # The library's own words, from the worker with the GPU resource (and no GPU).
    assert "] FAILED m@sm86+weightless after " in out and "Error Code 1: Myelin" in out
    assert f"skipped m@current: {CURRENT_ON_CLUSTER}" in out
    assert f"skipped m@current+weightless: {CURRENT_ON_CLUSTER}" in out
    assert "needs a GPU" not in out + err
    lock = read_lock(tmp_path / "rtx-matrix.lock")
    assert lock is not None and list(lock.engines) == ["m@sm86"]
    assert lock.engines["m@sm86"].gpu is None


def test_without_a_cluster_the_same_gpu_cells_need_this_hosts_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from matrix.cli import main

    modelgen.matmul_fp16(tmp_path / "models" / "m.onnx")
    manifest = tmp_path / "rtx-matrix.yaml"
    manifest.write_text(GPU_MANIFEST)
    assert main(["build", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "skipped m@sm86+weightless: needs a GPU: " in out
    assert main(["build", "--require-gpu", str(manifest)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: --require-gpu: 3 cells cannot be built: needs a GPU: "), err
