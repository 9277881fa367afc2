"""Both local pools with real builds: parallel cells, a killed worker, a timeout, Ctrl-C.

Every test that takes `local_pool_kind` runs once with the posix pool and once with the
portable one (`RTX_MATRIX_WORKERS`), and asserts the same of both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.build.pools import Pool, local_pool, posix_child
from matrix.build.pools.portable import PortablePool
from matrix.build.pools.posix import WorkerPool
from tests import modelgen
from tests.factories import build_request as request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "mlp": modelgen.mlp_fp32(folder / "mlp.onnx"),
        "conv": modelgen.conv_fp32(folder / "conv.onnx"),
        # About 3 s to build: long enough to kill or time out mid-build.
        "slow": modelgen.slow_conv_stack(folder / "slow.onnx"),
    }


def quick_cells(tmp_path: Path, models: dict[str, Path], count: int) -> list[BuildRequest]:
    targets: list[tuple[str, ...]] = [(), ("sm86",), ("sm75",), ("sm89", "sm120")]
    return [request(tmp_path, models["conv"], f"conv{i}", ccs=targets[i % len(targets)])
            for i in range(count)]


def temp_leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "engines").glob(".*.tmp-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child may linger as a zombie until reaped; that is not a running worker.
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() \
        else "Z"
    return state != "Z"


def test_two_workers_build_every_cell(tmp_path: Path, models: dict[str, Path],
                                      local_pool_kind: str) -> None:
    events: list[ProgressEvent] = []
    with local_pool(2) as pool:
        for cell in quick_cells(tmp_path, models, 6):
            pool.submit(cell)
        results = {r.cell_id: r for r in pool.results(events.append)}
    assert sorted(results) == [f"conv{i}" for i in range(6)]
    assert all(r.ok for r in results.values()), results
    assert results["conv2"].header_mask == 0x01 and results["conv3"].header_mask == 0x18
    for cell_id, result in results.items():
        engine = tmp_path / "engines" / f"{cell_id}.engine"
        assert engine.stat().st_size == result.size
    starts = [e for e in events if e.kind == "start"]
    assert len(starts) == 6 and len({e.pid for e in starts}) <= 2
    assert os.getpid() not in {e.pid for e in starts}
    # Every cell's events end with `end`, delivered before its result was yielded.
    assert [e.kind for e in events if e.cell_id == "conv0"][-1] == "end"
    assert temp_leftovers(tmp_path) == []


def test_events_come_before_their_result(tmp_path: Path, models: dict[str, Path],
                                         local_pool_kind: str) -> None:
    seen: list[str] = []
    with local_pool(1) as pool:
        for cell in quick_cells(tmp_path, models, 3):
            pool.submit(cell)
        for result in pool.results(lambda e: seen.append(f"{e.kind}:{e.cell_id}")):
            seen.append(f"result:{result.cell_id}")
    order = [s for s in seen if s.split(":")[0] in ("start", "end", "result")]
    assert order == [f"{kind}:conv{i}" for i in range(3) for kind in ("start", "end", "result")]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGABRT])
def test_a_worker_killed_mid_build_fails_only_its_cell(tmp_path: Path, models: dict[str, Path],
                                                       signum: int, local_pool_kind: str) -> None:
    slow = request(tmp_path, models["slow"], "slow")
    # Stands for the temp file a worker killed while writing would leave.
    left_behind = tmp_path / "engines" / ".slow.engine.tmp-99999"
    victims: list[int] = []

    def kill_slow_mid_build(event: ProgressEvent) -> None:
        if event.cell_id == "slow" and event.kind == "phase" and not victims:
            victims.append(event.pid)
            left_behind.parent.mkdir(parents=True, exist_ok=True)
            left_behind.write_bytes(b"partial engine")
            os.kill(event.pid, signum)

    with local_pool(2) as pool:
        pool.submit(slow)
        for cell in quick_cells(tmp_path, models, 4):
            pool.submit(cell)
        results = {r.cell_id: r for r in pool.results(kill_slow_mid_build)}
    name = signal.Signals(signum).name
    assert results["slow"].error == f"worker died: signal {int(signum)} ({name})"
    assert not results["slow"].ok and results["slow"].seconds < 3
    assert all(results[f"conv{i}"].ok for i in range(4)), results
    assert not (tmp_path / "engines" / "slow.engine").exists()
    assert temp_leftovers(tmp_path) == []
    log = (tmp_path / "engines" / "logs" / "slow.log").read_text()
    assert log.endswith(f"rtx-matrix: worker died: signal {int(signum)} ({name})\n")
    assert not alive(victims[0])


def test_workers_killed_while_sending_events_never_block_the_others(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    # Kill each slow cell's worker right as its events stream in: were the event pipe guarded
    # by a lock, a worker dying while holding it would block every later worker forever.
    slow_cells = [request(tmp_path, models["slow"], f"slow{i}") for i in range(3)]
    killed: set[str] = set()

    def kill_on_first_step(event: ProgressEvent) -> None:
        if event.cell_id.startswith("slow") and event.kind == "step" \
                and event.cell_id not in killed:
            killed.add(event.cell_id)
            os.kill(event.pid, signal.SIGKILL)

    with local_pool(2) as pool:
        watchdog = threading.Timer(60, pool.shutdown)  # a hang fails the test, not the run
        watchdog.start()
        for cell in [*slow_cells, *quick_cells(tmp_path, models, 3)]:
            pool.submit(cell)
        results = {r.cell_id: r for r in pool.results(kill_on_first_step)}
        watchdog.cancel()
    assert sorted(results) == ["conv0", "conv1", "conv2", "slow0", "slow1", "slow2"]
    assert all(results[f"slow{i}"].error == "worker died: signal 9 (SIGKILL)" for i in range(3))
    assert all(results[f"conv{i}"].ok for i in range(3))


def test_timeout_fails_only_that_cell_and_replaces_its_worker(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    started = time.monotonic()
    with local_pool(1, timeout=1) as pool:
        pool.submit(request(tmp_path, models["slow"], "slow"))
        for cell in quick_cells(tmp_path, models, 2):
            pool.submit(cell)
        results = list(pool.results())
    assert [r.cell_id for r in results] == ["slow", "conv0", "conv1"]
    assert results[0].error == "timed out after 1 s" and not results[0].ok
    assert 1 <= results[0].seconds < 4  # generous: the machine is shared
    assert results[1].ok and results[2].ok
    assert time.monotonic() - started < 20
    assert temp_leftovers(tmp_path) == []


def children() -> list[int]:
    task = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
    return [int(pid) for pid in task.read_text().split()]


def test_workers_start_when_the_pool_is_entered(local_pool_kind: str) -> None:
    """Before any cell is submitted, so their start-up overlaps the caller's planning."""
    before = set(children())
    with local_pool(2):
        workers = [pid for pid in children() if pid not in before]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    assert not any(alive(pid) for pid in workers)


def test_a_worker_lost_while_idle_is_replaced_for_the_next_cell(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    before = set(children())
    with local_pool(1) as pool:
        (idle,) = [pid for pid in children() if pid not in before]
        os.kill(idle, signal.SIGKILL)
        while alive(idle):  # dead, not dying: a cell handed out meanwhile would fail with it
            time.sleep(0.01)
        pool.submit(quick_cells(tmp_path, models, 1)[0])
        results = list(pool.results())
    assert [(r.cell_id, r.ok, r.error) for r in results] == [("conv0", True, None)]


def test_a_library_that_fails_to_import_fails_each_cell_with_its_error(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    # A `tensorrt_rtx` ahead of the real one on the path stands for a broken install.
    broken = tmp_path / "broken" / "tensorrt_rtx"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libnvinfer missing')\n")
    with local_pool(1, env={"PYTHONPATH": str(broken.parent)}) as pool:
        for cell in quick_cells(tmp_path, models, 2):
            pool.submit(cell)
        results = list(pool.results())
    error = "worker error: ImportError: libnvinfer missing"
    assert [(r.cell_id, r.ok, r.error) for r in results] == [
        ("conv0", False, error), ("conv1", False, error)]
    log = (tmp_path / "engines" / "logs" / "conv1.log").read_text()
    assert log == f"rtx-matrix: {error}\n"


def test_ctrl_c_kills_workers_cleans_up_and_propagates(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    left_behind = tmp_path / "engines" / ".slow.engine.tmp-99999"
    workers: list[int] = []

    def interrupt(event: ProgressEvent) -> None:
        if event.kind == "start":
            workers.append(event.pid)
        if event.cell_id == "slow" and event.kind == "phase":
            left_behind.parent.mkdir(parents=True, exist_ok=True)
            left_behind.write_bytes(b"partial engine")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), local_pool(2) as pool:
        pool.submit(request(tmp_path, models["slow"], "slow"))
        pool.submit(request(tmp_path, models["slow"], "slow2"))
        list(pool.results(interrupt))
    assert temp_leftovers(tmp_path) == []
    assert workers and not any(alive(pid) for pid in workers)
    assert not (tmp_path / "engines" / "slow.engine").exists()


def test_shutdown_from_another_thread_ends_the_iteration(
        tmp_path: Path, models: dict[str, Path], local_pool_kind: str) -> None:
    started = threading.Event()
    workers: list[int] = []
    results: list[BuildResult] = []
    errors: list[BaseException] = []

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "start":
            workers.append(event.pid)
            started.set()

    def drain(pool: Pool) -> None:
        try:
            results.extend(pool.results(on_event))
        except BaseException as error:
            errors.append(error)

    with local_pool(1) as pool:
        pool.submit(request(tmp_path, models["slow"], "slow"))
        pool.submit(request(tmp_path, models["conv"], "conv"))
        thread = threading.Thread(target=drain, args=(pool,))
        thread.start()
        assert started.wait(timeout=20)
        pool.shutdown()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert results == [] and errors == []
    assert not alive(workers[0])
    assert temp_leftovers(tmp_path) == []


def test_parent_never_imports_the_library(local_pool_kind: str) -> None:
    code = (f"import sys, matrix.build.pools.{local_pool_kind}; "
            "print('tensorrt_rtx' in sys.modules, 'matrix.build.builder' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_environment_picks_the_pool(local_pool_kind: str) -> None:
    pool = local_pool(1)
    assert type(pool) is {"posix": WorkerPool, "portable": PortablePool}[local_pool_kind]


def test_a_pool_that_cannot_start_every_worker_leaves_none_behind(
        monkeypatch: pytest.MonkeyPatch, local_pool_kind: str) -> None:
    made: list[Any] = []
    module, name = (posix_child, "Child") if local_pool_kind == "posix" else (subprocess, "Popen")
    real = getattr(module, name)

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        if made:
            raise OSError(11, "Resource temporarily unavailable")
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(module, name, second_fails)
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        local_pool(2).__enter__()
    assert [child.returncode for child in made] == [-signal.SIGKILL]


def test_a_started_worker_handed_to_a_pool_never_entered_is_killed() -> None:
    child = posix_child.Child()
    WorkerPool(jobs=1, started=[child]).shutdown()
    assert child.returncode == -signal.SIGKILL
    with pytest.raises(ValueError, match="2 workers started for a pool of 1"):
        WorkerPool(jobs=1, started=[child, child])


def test_only_the_posix_pool_adopts_a_started_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTX_MATRIX_WORKERS", "portable")
    with pytest.raises(ValueError, match="only the posix pool adopts workers started before it"):
        local_pool(1, started=[object()])  # type: ignore[list-item]


def test_jobs_must_be_positive(local_pool_kind: str) -> None:
    with pytest.raises(ValueError, match="jobs must be at least 1, not 0"):
        local_pool(0)
