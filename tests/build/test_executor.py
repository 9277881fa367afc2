"""Executor orchestration: the stop/keep-going logic with a fake pool, then with each real
local pool and real builds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from matrix.build import executor
from matrix.build.executor import CellTask, Outcome, Run, RunOptions, Status
from matrix.build.memory import MemoryGate
from matrix.build.messages import BuildRequest, BuildResult, ProgressEvent
from matrix.build.pools import local_pool
from matrix.lockfile.book import LockBook
from matrix.lockfile.stamps import Stamps
from matrix.lockfile.types import Lock, PlanIdentity
from matrix.manifest.types import BuilderOptions
from tests import modelgen
from tests.factories import build_request


def header() -> Lock:
    return Lock("0.1.0", "1.7.1.116", "m.yaml", PlanIdentity("e" * 64, ()))


def on_disk(path: Path) -> list[str]:
    return sorted(json.loads(path.read_text())["engines"])


class FakePool:
    """Stands in for WorkerPool: 'builds' instantly, failing the cells named in `fail`."""

    def __init__(self, jobs: int, fail: set[str]) -> None:
        self.jobs = jobs
        self.fail = fail
        self.queue: list[BuildRequest] = []
        self.started: list[str] = []

    def __enter__(self) -> FakePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.queue.clear()

    def submit(self, request: BuildRequest) -> None:
        self.queue.append(request)

    def results(
        self, on_event: Callable[[ProgressEvent], None] | None = None
    ) -> Iterator[BuildResult]:
        while self.queue:
            request = self.queue.pop(0)
            self.started.append(request.cell_id)
            if on_event is not None:
                on_event(ProgressEvent(request.cell_id, "start"))
            ok = request.cell_id not in self.fail
            yield BuildResult(request.cell_id, ok, 0.1, error=None if ok else "boom")


def fake_tasks(*ids: str) -> list[CellTask]:
    def request(cell_id: str) -> BuildRequest:
        return BuildRequest(cell_id, "m.onnx", (), False, False, BuilderOptions(), (), "", "")

    return [CellTask(state=None, request=request(i), on_gpu=False) for i in ids]  # type: ignore[arg-type]


def drain(keep_going: bool, fail: set[str], jobs: int = 1) -> tuple[list[Any], FakePool]:
    run = Run(plan=None, book=None, options=RunOptions(jobs, keep_going), gpu=None)  # type: ignore[arg-type]
    pool = FakePool(jobs, fail)
    executor._drain_pool(run, pool, fake_tasks("c1", "c2", "c3"))
    messages = []
    while not run.messages.empty():
        kind, payload = run.messages.get()
        if kind == "outcome":
            messages.append((payload.cell_id, payload.status))
    return messages, pool


def test_orchestration_with_fake_builder_stops_starting_after_a_failure() -> None:
    outcomes, pool = drain(keep_going=False, fail={"c1"})
    assert pool.started == ["c1"]
    assert outcomes == [
        ("c1", Status.FAILED),
        ("c2", Status.NOT_STARTED),
        ("c3", Status.NOT_STARTED),
    ]


def test_orchestration_with_fake_builder_keeps_going(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[str] = []

    def record(run: Run, task: CellTask, result: BuildResult) -> Outcome:
        recorded.append(result.cell_id)
        status = Status.BUILT if result.ok else Status.FAILED
        return Outcome(result.cell_id, status, result.seconds, result.error or "")

    monkeypatch.setattr(executor, "_record", record)
    outcomes, pool = drain(keep_going=True, fail={"c1"}, jobs=2)
    assert pool.started == ["c1", "c2", "c3"]
    assert outcomes == [("c1", Status.FAILED), ("c2", Status.BUILT), ("c3", Status.BUILT)]


def test_an_engine_gone_before_it_is_recorded_fails_its_cell(tmp_path: Path) -> None:
    book = LockBook(tmp_path / "m.lock", header(), {}, Stamps.load(tmp_path), None)
    run = Run(plan=None, book=book, options=RunOptions(), gpu=None)  # type: ignore[arg-type]
    state = type("State", (), {"engine": tmp_path / "gone.engine"})()
    task = CellTask(state=state, request=fake_tasks("c1")[0].request, on_gpu=False)  # type: ignore[arg-type]
    result = BuildResult("c1", True, 0.5, sha256="0" * 64, size=1, header_mask=1)
    outcome = executor._record(run, task, result)
    assert outcome.status is Status.FAILED
    assert outcome.detail.startswith("engine lost: [Errno 2] No such file or directory")
    assert not (tmp_path / "m.lock").exists()


class ConcurrencyPool(FakePool):
    """Stands in for WorkerPool in tests of hand-out only: records which cells were in
    flight beside each one when it was submitted; `oom` cells end out of memory (as many
    times as listed)."""

    def __init__(self, jobs: int, oom: list[str] | None = None) -> None:
        super().__init__(jobs, set())
        self.beside: list[tuple[str, tuple[str, ...]]] = []
        self.oom = list(oom or [])

    def __enter__(self) -> ConcurrencyPool:
        return self

    def submit(self, request: BuildRequest) -> None:
        self.beside.append((request.cell_id, tuple(r.cell_id for r in self.queue)))
        super().submit(request)

    def results(
        self, on_event: Callable[[ProgressEvent], None] | None = None
    ) -> Iterator[BuildResult]:
        while self.queue:
            request = self.queue.pop(0)
            self.started.append(request.cell_id)
            if request.cell_id in self.oom:
                self.oom.remove(request.cell_id)
                yield BuildResult(request.cell_id, False, 0.1, error="killed: out of memory",
                                  out_of_memory=True)
            else:
                yield BuildResult(request.cell_id, True, 0.1)


def memory_tasks(**needs: int) -> list[CellTask]:
    return [
        CellTask(t.state, replace(t.request, expected_peak_bytes=needs[t.request.cell_id]), False)
        for t in fake_tasks(*needs)
    ]


def drain_memory(
    pool: ConcurrencyPool, budget: int | None, keep_going: bool = True, **needs: int
) -> list[tuple[str, Status, str]]:
    run = Run(plan=None, book=None, options=RunOptions(pool.jobs, keep_going), gpu=None)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executor, "_record", lambda run, task, result: Outcome(
            result.cell_id, Status.BUILT if result.ok else Status.FAILED, 0.1, result.error or ""))
        executor._drain_pool(run, pool, memory_tasks(**needs), MemoryGate(budget))
    messages = []
    while not run.messages.empty():
        kind, payload = run.messages.get()
        if kind == "outcome":
            messages.append((payload.cell_id, payload.status, payload.detail))
        elif kind == "event" and payload.kind == "retry":
            messages.append((payload.cell_id, "retry", payload.phase))  # type: ignore[arg-type]
    return messages


def test_orchestration_with_fake_builder_starts_only_what_fits_the_budget() -> None:
    pool = ConcurrencyPool(jobs=4)
    drain_memory(pool, 10 << 30, a=6 << 30, b=6 << 30, s1=1 << 30, s2=1 << 30)
    assert pool.beside == [("a", ()), ("s1", ("a",)), ("s2", ("a", "s1")), ("b", ("s1", "s2"))]


def test_orchestration_with_fake_builder_retries_an_oom_cell_once_alone() -> None:
    pool = ConcurrencyPool(jobs=2, oom=["a"])
    outcomes = drain_memory(pool, None, a=1 << 30, b=1 << 30, c=1 << 30)
    assert outcomes == [
        ("a", "retry", "killed: out of memory; retrying alone"),
        ("b", Status.BUILT, ""),
        ("a", Status.BUILT, ""),
        ("c", Status.BUILT, ""),
    ]
    assert pool.beside == [("a", ()), ("b", ("a",)), ("a", ()), ("c", ())]


def test_orchestration_with_fake_builder_fails_a_cell_out_of_memory_twice() -> None:
    pool = ConcurrencyPool(jobs=2, oom=["a", "a"])
    outcomes = drain_memory(pool, None, keep_going=False, a=1 << 30, b=1 << 30, c=1 << 30)
    assert outcomes == [
        ("a", "retry", "killed: out of memory; retrying alone"),
        ("b", Status.BUILT, ""),
        ("a", Status.FAILED, "killed: out of memory"),
        ("c", Status.NOT_STARTED, ""),
    ]


def record_without_a_lock(run: Run, task: CellTask, result: BuildResult) -> Outcome:
    status = Status.BUILT if result.ok else Status.FAILED
    return Outcome(result.cell_id, status, result.seconds, result.error or "")


@pytest.mark.slow
@pytest.mark.parametrize(("keep_going", "jobs"), [(False, 1), (True, 2)])
def test_a_real_pool_stops_or_keeps_going_after_a_failed_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_pool_kind: str, keep_going: bool,
    jobs: int
) -> None:
    monkeypatch.setattr(executor, "_record", record_without_a_lock)
    model = modelgen.conv_fp32(tmp_path / "conv.onnx")
    cells = [build_request(tmp_path, tmp_path / "missing.onnx", "c1"),
             build_request(tmp_path, model, "c2"), build_request(tmp_path, model, "c3")]
    run = Run(plan=None, book=None, options=RunOptions(jobs, keep_going), gpu=None)  # type: ignore[arg-type]
    with local_pool(jobs) as pool:
        executor._drain_pool(run, pool, [CellTask(None, c, False) for c in cells])  # type: ignore[arg-type]
    outcomes = {}
    while not run.messages.empty():
        kind, payload = run.messages.get()
        if kind == "outcome":
            outcomes[payload.cell_id] = payload
    assert outcomes["c1"].status is Status.FAILED and "missing.onnx" in outcomes["c1"].detail
    rest = Status.BUILT if keep_going else Status.NOT_STARTED
    assert [outcomes[c].status for c in ("c2", "c3")] == [rest, rest]
    assert (tmp_path / "engines" / "c3.engine").exists() is keep_going
