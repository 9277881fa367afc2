"""The cache's layout on any fsspec filesystem (a local folder: `matrix.engine_cache.folder`),
and the one place fsspec is imported.

    v1/engines/<sha256>.engine     engine bytes, named by their sha256
    v1/records/<fingerprint>.json  the record of the engine last pushed for that key

Every write is atomic for readers: object stores (S3, GCS, Azure, memory) show an object
only once its upload completed; on other filesystems (a folder, SFTP, ...) the bytes go to
a temporary name that is then renamed onto the final one. So a reader sees no record, or a
whole record that names an engine already whole; a writer killed mid-push leaves at most a
temporary name that no reader looks at (`gc` removes it). Engines are pushed before their
record. Concurrent pushers of one key each write whole objects: the same engine under the
same name, or their own engine and then a record naming it (the last record wins).

Any failure to talk to the store is `CacheUnavailable`, which callers turn into a warning:
a cache never fails a build.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import FileIO
from typing import IO, Any, Protocol

from matrix.engine_cache.config import display_url, protocol
from matrix.engine_cache.record import Record, record_from_json, record_to_json
from matrix.manifest.types import CacheSpec

LAYOUT = "v1"
OBJECT_STORES = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oci", "r2"}
)
"""Backends whose uploads appear whole or not at all, so they need no temporary name."""
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure", "http": "http", "https": "http"}
"""The rtx-matrix extra that installs each backend."""
TEMP_MARK = ".tmp-"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_S3_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}
S3FS_RETRIES = 2
"""Botocore's defaults wait ~60 s per try and retry 4 times, and s3fs tries each call 5
times over (its class attribute `retries`): an unreachable endpoint must cost a build a
second or two, not minutes."""


class CacheUnavailable(Exception):
    """The store cannot be used (unreachable, refused, misconfigured); one line saying why."""


class Rejected(Exception):
    """A cache entry that must not be used; the message says why, in one line."""


class Cancelled(Exception):
    """The run was interrupted while a download went on."""


@dataclass(frozen=True)
class Listed:
    """One file of the store, for `cache status` and `gc`."""

    path: str
    size: int
    mtime: float


class EngineStore:
    """One cache URL opened through fsspec; every method raises only FileNotFoundError
    (for a missing object) and CacheUnavailable."""

    def __init__(self, spec: CacheSpec) -> None:
        self.spec = spec
        self.url = display_url(spec.url)
        self.protocol = protocol(spec.url)
        self.fs, root = _open(spec.url, self.protocol, self.url)
        self.root = root.rstrip("/")
        self.is_folder = self.protocol == "file"
        self.atomic_uploads = self.protocol in OBJECT_STORES

    # --- paths

    def engine_path(self, sha256: str) -> str:
        return f"{self.root}/{LAYOUT}/engines/{sha256}.engine"

    def record_path(self, fingerprint: str) -> str:
        return f"{self.root}/{LAYOUT}/records/{fingerprint}.json"

    @property
    def layout_root(self) -> str:
        return f"{self.root}/{LAYOUT}"

    # --- reading

    def read_record(self, fingerprint: str) -> Record:
        """The record of `fingerprint`; FileNotFoundError when there is none, ValueError
        when it is not a record."""
        with self._talking():
            raw = self.fs.cat_file(self.record_path(fingerprint))
        return record_from_json(raw)

    @contextlib.contextmanager
    def open_engine(self, sha256: str, block_size: int) -> Iterator[Reader]:
        with self._talking(), self.fs.open(self.engine_path(sha256), "rb",
                                           block_size=block_size) as handle:
            yield _Guarded(handle, self)

    @contextlib.contextmanager
    def open_local(self, sha256: str) -> Iterator[tuple[str, FileIO]]:
        """A folder cache's engine file: its path, and the file opened unbuffered for its
        descriptor (errors while reading it are plain OSErrors)."""
        path = self.fs._strip_protocol(self.engine_path(sha256))
        with contextlib.ExitStack() as stack:
            with self._talking():
                handle = stack.enter_context(open(path, "rb", buffering=0))
            yield path, handle

    def get_engine(self, sha256: str, local_path: str, on_bytes: Callable[[int], None]) -> None:
        """Download engine `sha256` to `local_path` as the backend downloads a file (one
        streamed request where it can); `on_bytes` is told the bytes received so far and
        may raise to stop it."""
        from fsspec.callbacks import Callback

        class Told(Callback):  # type: ignore[misc]
            def call(self, *args: Any, **kwargs: Any) -> None:
                on_bytes(int(self.value))

        with self._talking():
            self.fs.get_file(self.engine_path(sha256), local_path, callback=Told())

    def read(self, path: str) -> bytes:
        with self._talking():
            return bytes(self.fs.cat_file(path))

    def engine_size(self, sha256: str) -> int | None:
        try:
            with self._talking():
                return int(self.fs.info(self.engine_path(sha256))["size"])
        except FileNotFoundError:
            return None

    def touch(self, *paths: str) -> None:
        """Mark as just used, for `gc`'s least-recently-used order (folders this run may
        write to only: a read-only cache is not touched; never creates a file that gc
        removed meanwhile)."""
        if not self.is_folder or not self.spec.push:
            return
        for path in paths:
            with contextlib.suppress(OSError):
                os.utime(self.fs._strip_protocol(path))

    def list(self, what: str) -> list[Listed]:
        """Every file under `v1/<what>` (`engines` or `records`), temporaries included."""
        try:
            with self._talking():
                found = self.fs.find(f"{self.layout_root}/{what}", detail=True)
        except FileNotFoundError:
            return []
        return [
            Listed(path, int(info.get("size") or 0), _mtime(info))
            for path, info in sorted(found.items())
            if info.get("type", "file") == "file"
        ]

    # --- writing

    def put_engine(self, local_path: str, sha256: str, size: int) -> bool:
        """Upload an engine unless the same bytes are there already; whether it uploaded."""
        target = self.engine_path(sha256)
        if self.engine_size(sha256) == size:
            return False
        with self._talking():
            self._write(target, lambda path: self.fs.put_file(local_path, path))
        return True

    def put_record(self, record: Record) -> None:
        data = record_to_json(record).encode("utf-8")
        with self._talking():
            self._write(self.record_path(record.fingerprint),
                        lambda path: self.fs.pipe_file(path, data))

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._talking():
            self.fs.rm_file(path)

    def _write(self, target: str, write: Any) -> None:
        if self.atomic_uploads:
            write(target)
            return
        self.fs.makedirs(self.fs._parent(target), exist_ok=True)
        temporary = temp_name(target)
        try:
            write(temporary)
            self.fs.mv(temporary, target)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(temporary)
            raise

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """Store errors as CacheUnavailable, one line; a missing object stays itself."""
        try:
            yield
        except (FileNotFoundError, CacheUnavailable, Cancelled, Rejected):
            raise
        except Exception as error:
            raise CacheUnavailable(f"cache {self.url}: {describe(error)}") from error


class Reader(Protocol):
    def readinto(self, buffer: memoryview) -> int: ...


class _Guarded:
    """A store file whose read errors are CacheUnavailable too (a connection lost mid-way)."""

    def __init__(self, handle: IO[bytes], store: EngineStore) -> None:
        self.handle = handle
        self.store = store

    def readinto(self, buffer: memoryview) -> int:
        with self.store._talking():
            count = self.handle.readinto(buffer)  # type: ignore[attr-defined]
        return int(count or 0)


def temp_name(target: str) -> str:
    """`<folder>/.<name>.tmp-<host>-<pid>-<random>`: unique across machines sharing a folder."""
    folder, _, name = target.rpartition("/")
    tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return f"{folder}/.{name}{TEMP_MARK}{tag}"


def is_sha256(text: str) -> bool:
    return bool(_SHA256.match(text))


def describe(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _open(url: str, proto: str, shown: str) -> tuple[Any, str]:
    if proto == "file":
        from matrix.engine_cache.folder import Folder

        return Folder(), url.removeprefix("file://")
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise CacheUnavailable("the engine cache needs fsspec: pip install fsspec") from None
    if proto not in known_implementations:
        raise CacheUnavailable(f"cache {shown}: no fsspec backend for {proto}://")
    options: dict[str, Any] = {"skip_instance_cache": True}
    if proto in ("s3", "s3a") and "config_kwargs" not in fsspec.config.conf.get("s3", {}):
        options["config_kwargs"] = _S3_TIMEOUTS
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
        if "config_kwargs" in options:
            fs.retries = S3FS_RETRIES
    except ImportError as error:
        extra = EXTRAS.get(proto)
        hint = f" (pip install 'rtx-matrix[{extra}]')" if extra else ""
        raise CacheUnavailable(f"cache {shown}: {describe(error)}{hint}") from None
    except Exception as error:
        raise CacheUnavailable(f"cache {shown}: {describe(error)}") from None
    return fs, str(root)


def _mtime(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value: Any = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if value is not None and hasattr(value, "timestamp"):
            return float(value.timestamp())
    return time.time()
