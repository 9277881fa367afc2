"""`build` with a shared engine cache, on a folder and on a real S3 server, with real builds."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from matrix.lockfile.io import read_lock
from tests.engine_cache.conftest import CELLS, Project, cache_files, make_project

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blob_path(cache_url: str, sha: str) -> str:
    return f"{cache_url}/v1/engines/{sha}.engine"


def rewrite(url: str, data: bytes) -> None:
    """Replace one cached object, whatever the backend."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    fs.pipe_file(path, data)


def built(out: str) -> list[str]:
    return sorted(line.split()[2] for line in out.splitlines() if "] built " in line)


def fetched(out: str) -> list[str]:
    return sorted(line.split()[2] for line in out.splitlines() if "] fetched " in line)


def test_a_fresh_clone_gets_every_engine_from_the_cache(
    project: Project, cache_url: str, tmp_path: Path, capsys: Any
) -> None:
    project.write({"url": cache_url})
    assert project.run("build", "-j2") == 0
    out = capsys.readouterr().out
    assert built(out) == list(CELLS)
    assert "pushed 3 engines" in out

    clone = project.clone(tmp_path / "clone")
    assert clone.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert fetched(out) == list(CELLS) and built(out) == []
    assert "summary: 0 built, 3 from cache (" in out
    assert err == ""
    for cell in CELLS:
        assert sha256(clone.engine(cell)) == sha256(project.engine(cell))
        assert "fetched from the cache" in clone.engine(cell).with_suffix(".log").read_text()
    # The lock named these very engines: not one line of it changes.
    assert clone.lock.read_text() == project.lock.read_text()
    assert not list(clone.engines.rglob("*.tmp*"))
    assert clone.run("build") == 0
    assert capsys.readouterr().out == "3 cells up to date\n"


def test_cells_new_to_the_lock_come_with_the_builders_facts(
    project: Project, cache_url: str, tmp_path: Path, capsys: Any
) -> None:
    project.write({"url": cache_url})
    assert project.run("build", "-j2") == 0
    clone = project.clone(tmp_path / "clone")
    clone.lock.unlink()
    assert clone.run("cache", "pull") == 0
    assert fetched(capsys.readouterr().out) == list(CELLS)
    origin, pulled = read_lock(project.lock), read_lock(clone.lock)
    assert origin is not None and pulled is not None
    for cell in CELLS:
        mine, theirs = pulled.engines[cell], origin.engines[cell]
        assert mine.source == cache_url and theirs.source == "built"
        assert (mine.sha256, mine.size, mine.header_mask, mine.build_seconds, mine.fingerprint) \
            == (theirs.sha256, theirs.size, theirs.header_mask, theirs.build_seconds,
                theirs.fingerprint)
        assert mine.io and (mine.io, mine.weights_bytes) == (theirs.io, theirs.weights_bytes)
        assert sha256(clone.engine(cell)) == mine.sha256
    assert clone.run("status", "--check", "--verify") == 0


def test_a_poisoned_entry_is_rejected_and_the_cell_built(
    project: Project, cache_url: str, tmp_path: Path, capsys: Any
) -> None:
    project.write({"url": cache_url})
    assert project.run("build", "-j2") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    good = lock.engines["a@sm86"]
    poison = bytearray(project.engine("a@sm86").read_bytes())
    poison[len(poison) // 2] ^= 0xFF  # same size, same valid header, other bytes
    rewrite(blob_path(cache_url, good.sha256), bytes(poison))
    capsys.readouterr()

    clone = project.clone(tmp_path / "clone")
    assert clone.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert built(out) == ["a@sm86"]
    assert fetched(out) == ["a@sm89", "b@sm86"]
    assert err == (
        f"warning: a@sm86: cache entry rejected: the engine's sha256 is "
        f"{hashlib.sha256(poison).hexdigest()[:12]}, not {good.sha256[:12]} as recorded "
        "(corrupt or poisoned entry)\n"
    )
    engine = clone.engine("a@sm86").read_bytes()
    assert engine != bytes(poison)
    rebuilt = read_lock(clone.lock)
    assert rebuilt is not None
    assert hashlib.sha256(engine).hexdigest() == rebuilt.engines["a@sm86"].sha256
    assert rebuilt.engines["a@sm86"].source == "built"


def test_a_truncated_engine_or_a_broken_record_is_a_warning(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    blob = cache / "v1" / "engines" / f"{lock.engines['a@sm86'].sha256}.engine"
    blob.write_bytes(blob.read_bytes()[:1000])
    record = cache / "v1" / "records" / f"{lock.engines['b@sm86'].fingerprint}.json"
    record.write_text("{not json")
    capsys.readouterr()
    clone = project.clone(tmp_path / "clone")
    clone.lock.unlink()  # no lock entry to fall back on: only the records count
    assert clone.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert built(out) == ["a@sm86", "b@sm86"] and fetched(out) == ["a@sm89"]
    assert "warning: b@sm86: cache entry rejected: invalid entry: the record is not JSON" in err
    assert ("warning: a@sm86: cache entry rejected: the engine has 1000 bytes, "
            f"{lock.engines['a@sm86'].size} recorded (truncated?)") in err
    # Each build pushes its engine: the entries are whole again.
    assert clone.run("cache", "status", "--verify") == 0
    out = capsys.readouterr().out
    assert out.endswith("3 cells: 3 present (" + out.rsplit("3 present (", 1)[1])




@pytest.mark.parametrize("how", ["manifest", "flag", "environment"])
def test_a_read_only_cache_is_never_written(
    project: Project, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    cache = tmp_path / "cache"
    other = make_project(tmp_path / "other")
    other.write()
    assert other.run("build", "-j2", "b@sm86", "--cache", str(cache)) == 0
    before = cache_files(cache)
    assert len(before) == 2  # one record, one engine

    args: list[str] = []
    if how == "manifest":
        project.write({"url": str(cache), "push": False})
    else:
        project.write({"url": str(cache)})
        if how == "flag":
            args = ["--no-push"]
        else:
            monkeypatch.setenv("RTX_MATRIX_CACHE_PUSH", "0")
    capsys.readouterr()
    assert project.run("build", "-j2", *args) == 0
    out = capsys.readouterr().out
    assert fetched(out) == ["b@sm86"] and built(out) == ["a@sm86", "a@sm89"]
    assert "pushed" not in out
    assert cache_files(cache) == before


def test_an_http_cache_is_read_only(
    project: Project, tmp_path: Path, http_folder: tuple[Path, str], capsys: Any
) -> None:
    folder, url = http_folder
    project.write({"url": str(folder)})
    assert project.run("build", "-j2", "a@*") == 0
    before = cache_files(folder)
    capsys.readouterr()
    clone = project.clone(tmp_path / "clone")
    assert clone.run("build", "-j2", "--cache", url, "--push") == 0
    out, err = capsys.readouterr()
    assert fetched(out) == ["a@sm86", "a@sm89"] and built(out) == ["b@sm86"]
    assert err == "" and "pushed" not in out
    assert cache_files(folder) == before
    assert clone.run("cache", "push", "--cache", url) == 1
    assert "an http(s) cache is read-only" in capsys.readouterr().err


def test_two_machines_pushing_the_same_keys_at_once(
    project: Project, cache_url: str, tmp_path: Path, capsys: Any
) -> None:
    """Real processes: two pushers of the same cells, and a reader checking every entry it
    sees, again and again. Builds of the same inputs may differ in bytes: both engines stay
    whole, and a clone gets exactly the engine its lock names."""
    second = make_project(tmp_path / "second")
    for one in (project, second):
        one.write()
        assert one.run("build", "-j2") == 0
    capsys.readouterr()
    push = [sys.executable, "-m", "matrix", "cache", "push", "--cache", cache_url]
    check = [sys.executable, "-m", "matrix", "cache", "status", "--verify", "--json",
             "--cache", cache_url]
    for _ in range(2):
        runs = [
            subprocess.Popen([*push, str(p.manifest)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for p in (project, second)
        ]
        reader = subprocess.Popen([*check, str(project.manifest)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, out + err
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, out + err
        states = {cell["id"]: cell["state"] for cell in json.loads(out)["cells"]}
        assert set(states.values()) <= {"present", "missing"}, states
    for one in (project, second):
        clone = one.clone(tmp_path / f"clone-of-{one.root.name}")
        assert clone.run("cache", "pull", "--cache", cache_url) == 0
        out, err = capsys.readouterr()
        assert fetched(out) == list(CELLS) and "warning" not in err
        assert clone.lock.read_text() == one.lock.read_text()
        assert clone.run("status", "--check", "--verify") == 0


class StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder cache over HTTP, but sends an engine only half at first: the rest
    waits until the test releases it (streamed, `Accept-Ranges: none`, as a server that
    cannot seek would)."""

    half_sent = threading.Event()
    release = threading.Event()

    def do_HEAD(self) -> None:
        if not self.path.endswith(".engine"):
            super().do_HEAD()
            return
        self._engine_headers(self._engine())

    def do_GET(self) -> None:
        if not self.path.endswith(".engine"):
            super().do_GET()
            return
        data = self._engine()
        self._engine_headers(data)
        with contextlib.suppress(OSError):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            type(self).half_sent.set()
            type(self).release.wait(60)
            self.wfile.write(data[len(data) // 2 :])

    def _engine(self) -> bytes:
        return Path(self.translate_path(self.path)).read_bytes()

    def _engine_headers(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "none")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_pull_killed_midway_leaves_nothing_behind(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    """The pull is killed with -9 once it has received half of an engine (from an HTTP
    cache that sends the rest only when told). Afterwards: no engine under its name, no
    lock change; the next pull brings the engine and leaves no temporary file behind."""
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2", "a@sm86") == 0
    whole = project.engine("a@sm86").read_bytes()
    handler = functools.partial(StallingHandler, directory=str(cache))
    StallingHandler.half_sent.clear()
    StallingHandler.release.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    clone = project.clone(tmp_path / "clone")
    locked = clone.lock.read_text()
    engine = clone.engine("a@sm86")
    try:
        pull = subprocess.Popen(
            [sys.executable, "-m", "matrix", "cache", "pull", str(clone.manifest), "a@sm86",
             "--cache", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        assert StallingHandler.half_sent.wait(60), pull.communicate()
        half = len(whole) // 2
        deadline = time.monotonic() + 2  # a named temporary shows the bytes written so far
        while time.monotonic() < deadline and not any(
            p.stat().st_size >= half for p in engine.parent.glob(".*.tmp-*")
        ):
            time.sleep(0.01)
        os.kill(pull.pid, signal.SIGKILL)
        pull.wait(timeout=30)
        assert pull.returncode == -signal.SIGKILL
        assert not engine.exists()
        assert clone.lock.read_text() == locked
        StallingHandler.release.set()
        capsys.readouterr()
        assert clone.run("cache", "pull", "a@sm86", "--cache", url) == 0
    finally:
        StallingHandler.release.set()
        server.shutdown()
        server.server_close()
    assert fetched(capsys.readouterr().out) == ["a@sm86"]
    assert engine.read_bytes() == whole
    assert sorted(p.name for p in engine.parent.iterdir()) == ["a@sm86.engine", "a@sm86.log"]


def test_an_unreachable_cache_is_a_warning(
    project: Project, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:  # nothing listens on a port we bound and let go
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    project.write({"url": "s3://nowhere/engines"})
    assert project.run("build", "-j2") == 0
    out, err = capsys.readouterr()
    assert built(out) == list(CELLS)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: cache s3://nowhere/engines: ")
    assert lines[0].endswith("; going on without the cache")
    assert project.run("status") == 0


def test_the_noop_run_does_not_touch_the_cache(project: Project, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2") == 0
    before = cache_files(cache)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "matrix", "build", str(project.manifest)],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout == "3 cells up to date\n"
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert not imported & {"fsspec", "s3fs", "matrix.engine_cache.store"}
    assert cache_files(cache) == before


def test_status_says_which_stale_cells_the_cache_has(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2", "a@*") == 0
    clone = project.clone(tmp_path / "clone")
    capsys.readouterr()
    assert clone.run("status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a@sm86: engine missing [in the cache (")
    assert lines[1].startswith("a@sm89: engine missing [in the cache (")
    assert lines[2] == "b@sm86: new cell [not in the cache]"
    assert clone.run("status", "--no-cache") == 0
    assert capsys.readouterr().out.splitlines()[2] == "b@sm86: new cell"
    assert clone.run("status", "--json") == 0
    cells = {c["id"]: c for c in json.loads(capsys.readouterr().out)["cells"]}
    assert cells["a@sm86"]["cache"]["state"] == "present"
    assert cells["b@sm86"]["cache"] == {"state": "missing", "size": None, "detail": ""}


def test_cache_status_and_verify(project: Project, tmp_path: Path, capsys: Any) -> None:
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2", "a@*") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    sha = lock.engines["a@sm89"].sha256
    blob = cache / "v1" / "engines" / f"{sha}.engine"
    poison = bytearray(blob.read_bytes())
    poison[-1] ^= 1
    blob.write_bytes(bytes(poison))
    capsys.readouterr()
    assert project.run("cache", "status") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["a@sm86", "present"]
    assert out[1].split()[:2] == ["a@sm89", "present"]  # the bytes are not read
    assert out[2].split() == ["b@sm86", "missing"]
    assert out[3].startswith(f"cache {cache}: 3 cells: 2 present (")
    assert project.run("cache", "status", "--verify") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["a@sm89", "invalid"] and "poisoned" in out[1]


def test_cache_push_uploads_what_the_lock_names(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    cache = tmp_path / "cache"
    assert project.run("build", "-j2") == 0
    capsys.readouterr()
    assert project.run("cache", "push", "--cache", str(cache)) == 0
    assert capsys.readouterr().out.startswith("pushed 3 engines (")
    assert project.run("cache", "push", "--cache", str(cache), "a@sm86") == 0
    assert capsys.readouterr().out == "pushed 0 engines (0 B), 1 already in the cache\n"
    engine = project.engine("b@sm86")
    data = bytearray(engine.read_bytes())
    data[100] ^= 1
    stat = engine.stat()
    engine.write_bytes(bytes(data))
    os.utime(engine, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # fools the stamps, not a push
    assert project.run("cache", "push", "--cache", str(tmp_path / "other"), "b@sm86") == 1
    out, err = capsys.readouterr()
    assert "b@sm86.engine: not pushed: it no longer matches the lock" in err
    assert out == "pushed 0 engines (0 B), 0 already in the cache\n"


def test_no_cache_configured_is_a_clear_error(project: Project, capsys: Any) -> None:
    assert project.run("cache", "pull") == 1
    assert capsys.readouterr().err == (
        "error: no engine cache: give --cache URL, set RTX_MATRIX_CACHE, or add "
        "'cache: {url: ...}' to the manifest\n"
    )


def test_pushes_killed_at_any_moment_leave_no_half_entry(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    """`cache push` killed with -9 at staggered moments: whatever made it into the cache
    checks out, the rest is missing, and nothing but temporaries is left half-written."""
    cache = tmp_path / "cache"
    assert project.run("build", "-j2") == 0
    capsys.readouterr()
    push = [sys.executable, "-m", "matrix", "cache", "push", str(project.manifest),
            "--cache", str(cache)]
    for delay in (0.3, 0.6, 0.9, 1.2):
        process = subprocess.Popen(push, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait(timeout=30)
        assert project.run("cache", "status", "--verify", "--json", "--cache", str(cache)) == 0
        states = {c["id"]: c["state"] for c in json.loads(capsys.readouterr().out)["cells"]}
        assert set(states.values()) <= {"present", "missing"}, (delay, states)
        named = [p for p in cache.rglob("*") if p.is_file() and ".tmp-" not in p.name]
        for path in named:
            assert path.suffix in (".engine", ".json"), path


def test_a_folder_cache_is_read_without_fsspec(project: Project, tmp_path: Path) -> None:
    """Importing fsspec costs more than fetching a warm clone's engines from a local folder."""
    project.write({"url": str(tmp_path / "cache")})
    assert project.run("build", "-j2") == 0
    clone = project.clone(tmp_path / "clone")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "matrix", "build", str(clone.manifest)],
        capture_output=True, text=True, check=True,
    )
    assert fetched(result.stdout) == list(CELLS)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "matrix.engine_cache.folder" in imported and "fsspec" not in imported


def test_a_fetched_engine_lost_to_a_power_cut_is_fetched_again(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    """A fetched engine is not fsynced: after a power cut, ext4, XFS and btrfs show one the
    disk had not written as empty or short, never as its old size; its stamp then fails."""
    project.write({"url": str(tmp_path / "cache")})
    assert project.run("build", "-j2") == 0
    clone = project.clone(tmp_path / "clone")
    assert clone.run("build") == 0
    capsys.readouterr()
    clone.engine("a@sm89").write_bytes(b"")
    assert clone.run("build") == 0
    out = capsys.readouterr().out
    assert fetched(out) == ["a@sm89"] and built(out) == []
    assert sha256(clone.engine("a@sm89")) == sha256(project.engine("a@sm89"))


def test_a_fresh_clone_asks_only_for_the_engines_its_lock_names(
    project: Project, tmp_path: Path, capsys: Any
) -> None:
    """The committed lock names each engine by sha256: no record is read before the
    download (here, reading one would fail the cache), and an engine the cache lacks is a
    plain miss (built, no warning)."""
    cache = tmp_path / "cache"
    project.write({"url": str(cache)})
    assert project.run("build", "-j2") == 0
    lock = read_lock(project.lock)
    assert lock is not None
    records = cache / "v1" / "records"
    shutil.rmtree(records)
    records.write_text("not a folder: reading a record here is an error, not a miss")
    (cache / "v1" / "engines" / f"{lock.engines['b@sm86'].sha256}.engine").unlink()
    capsys.readouterr()

    clone = project.clone(tmp_path / "clone")
    assert clone.run("build", "-j2", "--no-push") == 0  # (a push would write a record)
    out, err = capsys.readouterr()
    assert fetched(out) == ["a@sm86", "a@sm89"] and built(out) == ["b@sm86"]
    assert err == ""
    pulled = read_lock(clone.lock)
    assert pulled is not None
    assert {c: pulled.engines[c] for c in ("a@sm86", "a@sm89")} == \
        {c: lock.engines[c] for c in ("a@sm86", "a@sm89")}
