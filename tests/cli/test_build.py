"""`rtx-matrix build` end to end: real TensorRT-RTX builds of tiny generated models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from matrix.build.pools.posix_child import Child
from matrix.cli import head_start, main
from matrix.lockfile.io import read_lock
from matrix.versions import VERSION_OVERRIDE, installed_tensorrt_rtx
from tests import modelgen

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

MANIFEST = """\
version: 1
output: engines
models:
{models}
"""
MODELS = {
    "a": "  - name: a\n    onnx: models/a.onnx\n    targets: [sm86, sm89]\n",
    "b": "  - name: b\n    onnx: models/b.onnx\n    targets: [sm86]\n",
}


class Project:
    """A manifest folder with tiny conv models, and helpers to run the CLI on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = root / "rtx-matrix.yaml"
        self.lock = root / "rtx-matrix.lock"
        self.engines = root / "engines"

    def write(self, *models: str, extra: dict[str, str] | None = None) -> None:
        entries = {**MODELS, **(extra or {})}
        text = MANIFEST.format(models="".join(entries[m] for m in models))
        self.manifest.write_text(text)

    def engine(self, cell: str) -> Path:
        return self.engines / cell.split("@")[0] / f"{cell}.engine"

    def build(self, *args: str) -> int:
        return main(["build", "-j2", *args, str(self.manifest)])

    def lock_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.lock.read_text())
        return data


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(tmp_path)
    modelgen.conv_fp32(tmp_path / "models" / "a.onnx", seed=1)
    modelgen.conv_fp32(tmp_path / "models" / "b.onnx", seed=2)
    proj.write("a", "b")
    return proj


@pytest.fixture
def version_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    installed_tensorrt_rtx.cache_clear()
    yield monkeypatch
    monkeypatch.delenv(VERSION_OVERRIDE, raising=False)
    installed_tensorrt_rtx.cache_clear()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built_cells(output: str) -> list[str]:
    return sorted(line.split()[2] for line in output.splitlines() if "] built " in line)


def changed_lines(before: str, after: str) -> set[str]:
    """What differs between two lock texts of the same cells: cell ids for lines inside an
    engine entry, the line itself (stripped) for lines outside."""
    changed, cell = set(), None
    for old, new in zip(before.splitlines(), after.splitlines(), strict=True):
        if old.startswith('    "') and old.endswith("{"):
            cell = old.strip().split('"')[1]
        elif not old.startswith("      "):
            cell = None
        if old != new:
            changed.add(cell or new.strip().split(":")[0])
    return changed


def test_first_build_writes_engines_and_lock(
    project: Project, capsys: Any, local_pool_kind: str
) -> None:
    assert project.build() == 0
    out = capsys.readouterr().out
    assert built_cells(out) == ["a@sm86", "a@sm89", "b@sm86"]
    lock = read_lock(project.lock)
    assert lock is not None and sorted(lock.engines) == ["a@sm86", "a@sm89", "b@sm86"]
    for cell, entry in lock.engines.items():
        engine = project.engine(cell)
        assert entry.path == f"engines/{cell.split('@')[0]}/{cell}.engine"
        assert entry.sha256 == sha256(engine)
        assert entry.size == engine.stat().st_size
        assert engine.with_suffix(".log").is_file()
    a89 = lock.engines["a@sm89"]
    assert (a89.targets, a89.resolved_targets, a89.runs_on) == (("sm89",), ("sm89",), ("sm89",))
    assert a89.header_mask == 0b1000  # bit 3 = SM89 in the engine header
    assert a89.model.path == "models/a.onnx" and a89.model.name == "a"
    assert lock.plan.cells == ("a@sm86", "a@sm89", "b@sm86")
    assert not list(project.engines.rglob("*.tmp*"))


def test_second_run_is_a_noop(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    capsys.readouterr()
    before = project.lock.read_bytes()
    mtime = project.engine("a@sm86").stat().st_mtime_ns
    assert project.build() == 0
    assert capsys.readouterr().out == "3 cells up to date\n"
    assert project.lock.read_bytes() == before
    assert project.engine("a@sm86").stat().st_mtime_ns == mtime


def test_noop_run_imports_no_heavy_library(project: Project) -> None:
    assert project.build() == 0
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "matrix", "build", str(project.manifest)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "3 cells up to date\n"
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    heavy = {"tensorrt_rtx", "onnx", "rich", "jsonschema", "importlib.metadata"}
    assert not imported & {*heavy, "matrix.build.pools.posix", "matrix.build.pools.portable"}


def test_the_demo_builds_with_the_portable_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The pool Windows uses, forced on Linux: the same lock as the posix pool would write."""
    demo = tmp_path / "demo"
    shutil.copytree(
        ROOT / "manifests" / "demo", demo, ignore=shutil.ignore_patterns("engines", "*.lock")
    )
    manifest = demo / "rtx-matrix.yaml"
    monkeypatch.setenv("RTX_MATRIX_WORKERS", "portable")
    assert main(["build", "-j2", str(manifest)]) == 0
    assert "10 built" in capsys.readouterr().out
    lock = read_lock(demo / "rtx-matrix.lock")
    assert lock is not None
    assert sorted(lock.engines) == [
        "classifier@default", "classifier@rtx40", "classifier@sm75", "detector@ampere-plus",
        "detector@default", "detector@sm75", "fp8-head@default", "fp8-head@rtx40",
        "ranker@ampere-plus", "ranker@default",
    ]
    for entry in lock.engines.values():
        assert sha256(demo / entry.path) == entry.sha256
    umask = os.umask(0)
    os.umask(umask)
    assert (demo / "rtx-matrix.lock").stat().st_mode & 0o777 == 0o666 & ~umask
    # Fingerprints, engine stamps and lock header as the posix pool's run would judge them.
    monkeypatch.setenv("RTX_MATRIX_WORKERS", "posix")
    assert main(["build", "--check", str(manifest)]) == 0


def test_corrupt_lock_is_one_error_line(project: Project, capsys: Any) -> None:
    project.lock.write_text('{"version": 1, "engines": ')
    assert project.build() == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {project.lock}: bad lockfile: not valid JSON (Expecting value at line 1)\n"
    )
    assert project.lock.read_text() == '{"version": 1, "engines": '


def test_changed_model_rebuilds_only_its_cells(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    before = project.lock.read_text()
    capsys.readouterr()
    modelgen.conv_fp32(project.root / "models" / "a.onnx", seed=7)
    assert main(["build", str(project.manifest), "--check"]) == 1
    assert "would build a@sm86: model changed" in capsys.readouterr().out
    assert project.build() == 0
    assert built_cells(capsys.readouterr().out) == ["a@sm86", "a@sm89"]
    after = project.lock.read_text()
    # the plan digest covers every cell's fingerprint, so it moves too
    assert changed_lines(before, after) == {"a@sm86", "a@sm89", '"digest"'}
    assert project.lock_json()["engines"]["b@sm86"] == json.loads(before)["engines"]["b@sm86"]


def test_option_change_rebuilds(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    capsys.readouterr()
    option = MODELS["b"] + "    builder: {optimization_level: 1}\n"
    project.write("a", "b", extra={"b": option})
    assert main(["status", str(project.manifest)]) == 0
    assert "b@sm86: options changed" in capsys.readouterr().out
    assert project.build() == 0
    assert built_cells(capsys.readouterr().out) == ["b@sm86"]
    entry = project.lock_json()["engines"]["b@sm86"]
    assert entry["options"]["builder"] == {"optimization_level": 1}


def test_library_version_change_rebuilds_everything(
    project: Project, capsys: Any, version_hook: pytest.MonkeyPatch
) -> None:
    assert project.build() == 0
    old = project.lock_json()
    capsys.readouterr()
    version_hook.setenv(VERSION_OVERRIDE, "1.7.2.0")
    installed_tensorrt_rtx.cache_clear()
    assert main(["status", str(project.manifest)]) == 0
    assert "a@sm86: library version changed (1.7.1.116 -> 1.7.2.0)" in capsys.readouterr().out
    assert project.build() == 0
    assert built_cells(capsys.readouterr().out) == ["a@sm86", "a@sm89", "b@sm86"]
    new = project.lock_json()
    assert new["tensorrt_rtx"] == "1.7.2.0"
    assert all(
        new["engines"][c]["fingerprint"] != old["engines"][c]["fingerprint"] for c in old["engines"]
    )


def test_verify_detects_an_engine_edited_in_place(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    engine = project.engine("b@sm86")
    stat = engine.stat()
    data = bytearray(engine.read_bytes())
    data[-1] ^= 0xFF
    engine.write_bytes(bytes(data))
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    assert project.build() == 0  # same size and mtime: trusted without hashing
    assert capsys.readouterr().out == "3 cells up to date\n"
    assert main(["status", str(project.manifest), "--verify", "--check"]) == 1
    assert "b@sm86: engine modified" in capsys.readouterr().out
    assert project.build("--verify") == 0
    assert built_cells(capsys.readouterr().out) == ["b@sm86"]
    assert project.lock_json()["engines"]["b@sm86"]["sha256"] == sha256(engine)


def failing_project(project: Project) -> None:
    """Model `bad` is accepted by the planner and fails inside the builder."""
    modelgen.unfused_attention(project.root / "models" / "bad.onnx")
    bad = "  - name: bad\n    onnx: models/bad.onnx\n    targets: [sm86]\n"
    project.write("bad", "a", "b", extra={"bad": bad})


def test_failing_cell_with_keep_going(project: Project, capsys: Any, local_pool_kind: str) -> None:
    failing_project(project)
    assert project.build("-k") == 1
    out = capsys.readouterr().out
    assert built_cells(out) == ["a@sm86", "a@sm89", "b@sm86"]
    assert "FAILED bad@sm86 after" in out
    assert "3 built" in out and "1 failed" in out
    assert sorted(project.lock_json()["engines"]) == ["a@sm86", "a@sm89", "b@sm86"]
    assert not project.engine("bad@sm86").exists()
    assert "FAILED" in project.engine("bad@sm86").with_suffix(".log").read_text()


def test_without_keep_going_stops_starting_cells(
    project: Project, capsys: Any, local_pool_kind: str
) -> None:
    failing_project(project)
    assert main(["build", str(project.manifest), "-j1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED bad@sm86" in out
    assert built_cells(out) == []
    assert sorted(line.split()[-1] for line in out.splitlines() if "] not started " in line) == [
        "a@sm86",
        "a@sm89",
        "b@sm86",
    ]
    assert "0 built, 0 up to date, 1 failed" in out and "3 not started" in out
    assert project.lock_json()["engines"] == {}


def test_cells_selected_by_id_model_and_glob(project: Project, capsys: Any) -> None:
    manifest = str(project.manifest)
    assert main(["build", manifest, "a@sm89"]) == 0
    assert built_cells(capsys.readouterr().out) == ["a@sm89"]
    assert main(["build", "-j2", manifest, "b", "a@sm8?"]) == 0
    assert built_cells(capsys.readouterr().out) == ["a@sm86", "b@sm86"]
    assert main(["build", manifest, "nothing*"]) == 2
    assert "error: no cell matches 'nothing*'" in capsys.readouterr().err


def test_removed_model_leaves_the_lock(project: Project, capsys: Any) -> None:
    assert project.build() == 0
    project.write("a")
    capsys.readouterr()
    assert main(["status", str(project.manifest), "--check"]) == 1
    assert "b@sm86: removed from the manifest" in capsys.readouterr().out
    assert project.build() == 0
    assert sorted(project.lock_json()["engines"]) == ["a@sm86", "a@sm89"]


def hold_output_lock(project: Project, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the output folder's lock for `seconds`, as a build would."""
    state = project.engines / ".rtx-matrix"
    state.mkdir(parents=True)
    (state / "owner").write_text("4242")
    code = (f"import fcntl, os, time; fd = os.open({str(state / 'lock')!r}, os.O_RDWR); "
            f"fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep({seconds})")
    (state / "lock").touch()
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_second_build_on_the_same_output_exits_3(project: Project, capsys: Any) -> None:
    holder = hold_output_lock(project, 60)
    try:
        assert project.build() == 3
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"error: another rtx-matrix build is running on {project.engines} (pid 4242)" in err
    assert not project.lock.exists()


def test_wait_builds_once_the_other_build_ends(project: Project, capsys: Any) -> None:
    holder = hold_output_lock(project, 0.5)
    started = time.monotonic()
    assert project.build("--wait", "30") == 0
    assert time.monotonic() - started >= 0.4
    holder.wait()
    assert sorted(project.lock_json()["engines"]) == ["a@sm86", "a@sm89", "b@sm86"]


def test_a_killed_build_leaves_the_output_unlocked(project: Project, capsys: Any) -> None:
    holder = hold_output_lock(project, 60)
    holder.kill()  # the kernel drops a dead process's lock: no stale lock file to clean up
    holder.wait()
    assert project.build() == 0


# ---------------------------------------------------------------- interrupted runs (processes)


def slow_project(project: Project) -> None:
    """`slow` (about 3 s to build) after the quick cells, with -j1 so order is fixed."""
    modelgen.slow_conv_stack(project.root / "models" / "slow.onnx")
    slow = "  - name: slow\n    onnx: models/slow.onnx\n    targets: [sm86]\n"
    project.write("a", "slow", "b", extra={"slow": slow})


def start_build(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "matrix", "build", str(project.manifest), "-j1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_slow_build(project: Project, process: subprocess.Popen[str]) -> None:
    """Until both quick `a` cells are in the lock and `slow` is building."""
    log = project.engine("slow@sm86").with_suffix(".log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        ready = log.exists() and project.lock.exists()
        if ready and {"a@sm86", "a@sm89"} <= set(project.lock_json()["engines"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"slow cell never started: {process.communicate()}")


def assert_lock_matches_disk(project: Project) -> set[str]:
    lock = read_lock(project.lock)
    assert lock is not None
    for cell, entry in lock.engines.items():
        assert sha256(project.root / entry.path) == entry.sha256, cell
    return set(lock.engines)


def worker_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"matrix.build.worker" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_finished_cells_and_resume_builds_the_rest(
    project: Project, capsys: Any, signum: int, local_pool_kind: str
) -> None:
    slow_project(project)
    process = start_build(project)
    wait_for_slow_build(project, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert assert_lock_matches_disk(project) == {"a@sm86", "a@sm89"}
    assert not list(project.engines.rglob("*.tmp*"))
    assert project.build() == 0
    assert built_cells(capsys.readouterr().out) == ["b@sm86", "slow@sm86"]


def test_kill_9_leaves_a_valid_lock(project: Project, capsys: Any, local_pool_kind: str) -> None:
    slow_project(project)
    process = start_build(project)
    wait_for_slow_build(project, process)
    os.killpg(process.pid, signal.SIGKILL)  # the whole run at once, like a power loss
    process.communicate(timeout=30)
    assert assert_lock_matches_disk(project) == {"a@sm86", "a@sm89"}
    assert project.build() == 0
    assert built_cells(capsys.readouterr().out) == ["b@sm86", "slow@sm86"]
    assert not list(project.engines.rglob("*.tmp*"))


def test_workers_die_with_a_killed_run(project: Project, local_pool_kind: str) -> None:
    """Only the parent is killed: its worker must not build on unseen as an orphan."""
    slow_project(project)
    process = start_build(project)
    wait_for_slow_build(project, process)
    workers = worker_pids(process.pid)
    assert len(workers) == 1
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while running(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(workers[0])
    assert not project.engine("slow@sm86").exists()


def running(pid: int) -> bool:
    """Not gone and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_worker_killed_mid_build_fails_only_its_cell(
    project: Project, local_pool_kind: str
) -> None:
    slow_project(project)
    process = start_build(project, "-k")
    wait_for_slow_build(project, process)
    for pid in worker_pids(process.pid):
        os.kill(pid, signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, out + err
    assert "FAILED slow@sm86" in out and "SIGKILL" in out
    assert "built b@sm86" in out
    assert assert_lock_matches_disk(project) == {"a@sm86", "a@sm89", "b@sm86"}


class StandInPool:
    """Stands in for the early WorkerPool in tests of the start-early decision only; kills
    the worker `head_start` may have started, which a real pool would adopt."""

    def __init__(self, jobs: int, started: Sequence[Child] = ()) -> None:
        self.jobs = jobs
        self.shut = 0
        self.adopted = len(started)
        for child in started:
            head_start.discard(child)

    def shutdown(self) -> None:
        self.shut += 1


@pytest.mark.parametrize(
    ("flags", "touch", "early"),
    [
        ((), "nothing", True),  # no lock yet: a build is certain
        (("--force",), "lock", True),
        ((), "lock", False),  # lock written after the manifest: maybe a no-op, find out first
        ((), "manifest", True),  # manifest edited since the last build
        (("--dry-run",), "nothing", False),
        (("--check",), "nothing", False),
        (("--pool", "gpu"), "nothing", False),
        (("-j", "4"), "nothing", False),  # more workers than the 3 cores: wait for the plan
    ],
)
def test_workers_start_before_planning_only_when_a_build_is_likely_stand_in_pool(
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    flags: tuple[str, ...],
    touch: str,
    early: bool,
) -> None:
    from matrix.build import run as build_run
    from matrix.cli import build as build_cli
    from matrix.cli import make_parser

    if touch in ("lock", "manifest"):
        project.lock.write_text("{}")
        stamp = project.manifest.stat().st_mtime_ns
        newer = project.lock if touch == "lock" else project.manifest
        os.utime(newer, ns=(stamp + 10**9, stamp + 10**9))
    monkeypatch.setattr(build_run, "cpu_pool", lambda jobs, _, started: StandInPool(jobs))
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    args = make_parser().parse_args(["build", "-j3", *flags, str(project.manifest)])
    pool = build_cli.start_workers_early(args)
    assert (pool is not None) == early
    assert pool is None or pool.jobs == 3


def test_early_workers_are_shut_when_the_run_builds_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from matrix.build import run as build_run

    assert project.build() == 0
    pools: list[StandInPool] = []

    def stand_in(jobs: int, timeout: float | None, started: Sequence[Child]) -> StandInPool:
        pools.append(StandInPool(jobs, started))
        return pools[-1]

    monkeypatch.setattr(build_run, "cpu_pool", stand_in)
    os.utime(project.lock, ns=(0, 0))  # looks older than the manifest: workers start early
    capsys.readouterr()
    assert project.build() == 0
    assert capsys.readouterr().out == "3 cells up to date\n"
    assert [(p.shut, p.adopted) for p in pools] == [(1, 1)]  # the head start's worker too


@pytest.mark.parametrize(("text", "size"), [("48GiB", 48 << 30), ("512MiB", 512 << 20),
                                            ("1000", 1000), ("lots", None), ("0", None)])
def test_memory_takes_a_size_or_a_byte_count(text: str, size: int | None, capsys: Any) -> None:
    from matrix.cli import make_parser, parse

    argv = ["build", "--memory", text, "m.yaml"]
    if size is not None:
        assert parse(make_parser(argv), argv).memory == size
        return
    with pytest.raises(SystemExit) as exit_info:
        parse(make_parser(argv), argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"rtx-matrix build: error: argument --memory: not a memory size: '{text}' "
        "(try 48GiB, 512MiB)"
    )


def test_memory_with_dask_is_refused_before_any_work(project: Project, capsys: Any) -> None:
    """A cluster's budget is its workers' MEMORY resource, not the client's --memory."""
    code = main(["build", str(project.manifest), "--executor", "dask", "--scheduler",
                 "tcp://127.0.0.1:9", "--memory", "8GiB"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --memory is the local budget; a Dask worker states its own: "
        "dask worker SCHEDULER --resources MEMORY=48e9"
    ]
    assert not project.lock.exists()
