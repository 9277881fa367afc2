"""Real parts for the engine cache's tests: a folder, a real S3 server (moto's, on localhost,
in a process of its own) reached through s3fs, and an HTTP server for read-only caches;
projects of tiny real models built with the real library."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.cli import main
from tests import modelgen

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "rtx-matrix-tests",
    "AWS_SECRET_ACCESS_KEY": "rtx-matrix-tests",
    "AWS_DEFAULT_REGION": "us-east-1",
}
MANIFEST = """\
version: 1
output: engines
{cache}models:
  - name: a
    onnx: models/a.onnx
    targets: [sm86, sm89]
  - name: b
    onnx: models/b.onnx
    targets: [sm86]
"""
CELLS = ("a@sm86", "a@sm89", "b@sm86")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read() if process.stderr else b""
            raise RuntimeError(f"the S3 server exited: {error!r}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the S3 server did not listen on port {port} within {seconds} s")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free localhost port, for the whole session."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **S3_ENV},
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server; the environment points s3fs (and subprocesses) at
    it the way a user's would: AWS_* variables, nothing in the manifest."""
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    import s3fs

    bucket = f"engines-{secrets.token_hex(4)}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/team"


@pytest.fixture(params=["folder", "s3"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests against a folder cache and the S3 server."""
    if request.param == "folder":
        return str(tmp_path / "cache")
    url: str = request.getfixturevalue("s3_url")
    return url


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served read-only over HTTP on localhost: (folder, URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Project:
    """A manifest with two tiny conv models (three cells), and helpers to run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = root / "rtx-matrix.yaml"
        self.lock = root / "rtx-matrix.lock"
        self.engines = root / "engines"

    def write(self, cache: dict[str, Any] | None = None) -> None:
        text = f"cache: {json.dumps(cache)}\n" if cache else ""
        self.manifest.write_text(MANIFEST.format(cache=text))

    def engine(self, cell: str) -> Path:
        return self.engines / cell.split("@")[0] / f"{cell}.engine"

    def run(self, *args: str) -> int:
        command, rest = args[0], args[1:]
        if command == "cache":
            return main(["cache", rest[0], str(self.manifest), *rest[1:]])
        return main([command, str(self.manifest), *rest])

    def clone(self, root: Path) -> Project:
        """A fresh clone: the manifest, models and committed lock, no engines."""
        root.mkdir(parents=True)
        for name in ("rtx-matrix.yaml", "rtx-matrix.lock"):
            if (self.root / name).exists():
                shutil.copy2(self.root / name, root / name)
        shutil.copytree(self.root / "models", root / "models")
        return Project(root)


def make_project(root: Path) -> Project:
    project = Project(root)
    modelgen.conv_fp32(root / "models" / "a.onnx", seed=1)
    modelgen.conv_fp32(root / "models" / "b.onnx", seed=2)
    project.write()
    return project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "project")


@pytest.fixture(autouse=True)
def no_cache_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no engine cache or AWS profile of the machine running them."""
    for name in ("RTX_MATRIX_CACHE", "RTX_MATRIX_CACHE_PUSH", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def cache_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of a folder cache with its size and mtime: to show nothing was written."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
