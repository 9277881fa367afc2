"""Moving one engine between the store and the output folder, trusting nothing on the way.

A download streams into a file with no name (Linux O_TMPFILE; a `.tmp-<pid>` sibling where
the filesystem cannot), hashing as it goes. Only once its size, sha256 and engine header
match what the cell needs is the file renamed onto the engine path: a reader of the output
folder never sees a partial or unchecked engine, and a download killed with -9 leaves
nothing behind (a named sibling at worst, which the next run removes). The one exception to
hashing: a folder cache's file this user hashed before, unchanged since by its stat, is
copied by the kernel with only its size and header checked (`matrix.engine_cache.verified`).

A fetched engine is not fsynced, unlike a built one: its bytes are in the cache, one fetch
away, and waiting for the disk would cost the hit path more than the copy itself (bench/
bench_cache.py). After a power cut, an engine the disk had not written yet comes back missing,
empty or short on ext4, XFS and btrfs (none shows a file's new size before its data), so its
stamp no longer matches and the next run fetches it again; `status --verify` hashes every
engine wherever a filesystem promises less.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

from matrix.atomic import replace
from matrix.build.engine_header import HEADER_SIZE, describe_mask, read_header, version_tuple
from matrix.build.temp_files import temp_path
from matrix.engine_cache import verified
from matrix.engine_cache.store import Cancelled, EngineStore, Reader, Rejected

CHUNK = 4 << 20
"""Bytes per read: large enough that hashing and writing, not calls, take the time."""
PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True)
class Wanted:
    """What a downloaded engine must be to be used."""

    sha256: str
    size: int
    header_mask: int | None
    """The CC mask its header must hold; None: whatever the record says (GPU cells)."""
    tensorrt_rtx: str


Progress = Callable[[int], None]
"""Called with the bytes received so far."""


def download(
    store: EngineStore,
    wanted: Wanted,
    engine: Path | None,
    on_bytes: Progress | None = None,
    cancel: threading.Event | None = None,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Fetch engine `wanted.sha256` onto `engine`, checked first; Rejected when it does not
    check out, CacheUnavailable when the store fails. `engine` None: check only.
    `before_replace` runs once the engine checked out, just before it takes its name.

    From a folder, the bytes are hashed as they are copied, or copied by the kernel, all
    but their sha256 checked, when this user hashed that very file before (`verified`).
    From any other store, they come in one streamed request (`EngineStore.get_engine`, as
    the backend's own download would) to a named sibling, then are read back once to be
    checked: reading a remote file through `open` costs a request per block."""
    if engine is None:
        with store.open_engine(wanted.sha256, CHUNK) as source:
            _receive(source, wanted, None, on_bytes, cancel)
        return
    engine.parent.mkdir(parents=True, exist_ok=True)
    if not store.is_folder:
        _download_remote(store, wanted, engine, on_bytes, cancel, before_replace)
        return
    with _Unnamed(engine) as out, store.open_local(wanted.sha256) as (path, source):
        _from_folder(path, source, wanted, out.fd, on_bytes, cancel)
        if before_replace is not None:
            before_replace()
        out.commit()


def _download_remote(
    store: EngineStore,
    wanted: Wanted,
    engine: Path,
    on_bytes: Progress | None,
    cancel: threading.Event | None,
    before_replace: Callable[[], None] | None,
) -> None:
    named = temp_path(engine)
    report = _every_interval(on_bytes)

    def progress(done: int) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if done > wanted.size:
            raise Rejected(f"the engine is longer than the {wanted.size} bytes recorded")
        report(done)

    try:
        store.get_engine(wanted.sha256, str(named), progress)
        with open(named, "rb", buffering=0) as source:
            _receive(source, wanted, None, None, cancel)
        if on_bytes is not None:
            on_bytes(wanted.size)
        if before_replace is not None:
            before_replace()
        replace(named, engine)  # waits a moment for a reader (Windows)
    finally:
        with contextlib.suppress(FileNotFoundError):
            named.unlink()


def _from_folder(
    path: str,
    source: FileIO,
    wanted: Wanted,
    fd: int,
    on_bytes: Progress | None,
    cancel: threading.Event | None,
) -> None:
    """Copy a folder cache's engine file to `fd`: hashed as it is read, unless this user
    hashed this very file before (`matrix.engine_cache.verified`)."""
    before = os.fstat(source.fileno())
    if verified.vouches(path, before, wanted.sha256):
        _copy_vouched(source, before.st_size, wanted, fd, on_bytes, cancel)
        if verified.unchanged(os.fstat(source.fileno()), before):
            return
        # Changed meanwhile: rewritten, or only unlinked by a gc. Copied again, hashed.
        source.seek(0)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    read_at = time.time_ns()
    _receive(source, wanted, fd, on_bytes, cancel)
    if verified.unchanged(os.fstat(source.fileno()), before):
        verified.remember(path, before, wanted.sha256, read_at)


def _copy_vouched(
    source: FileIO,
    size: int,
    wanted: Wanted,
    fd: int,
    on_bytes: Progress | None,
    cancel: threading.Event | None,
) -> None:
    """Copy a file a mark vouches for, checking all but its sha256."""
    if size != wanted.size:
        raise _short(size, wanted)
    check_header(source.read(HEADER_SIZE), wanted)
    report = _every_interval(on_bytes)
    done = 0
    while done < size:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        count = _copy_range(source, fd, done, min(CHUNK, size - done))
        if not count:
            raise _short(done, wanted)
        done += count
        report(done)
    if on_bytes is not None:
        on_bytes(done)


_SENDFILE = True
"""Copy with Linux's sendfile, file to file inside the kernel as `shutil.copyfile` does there
(elsewhere it needs a socket); the tests turn it off to run the portable copy on Linux."""

_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}
"""What sendfile answers where a filesystem cannot (as `shutil.copyfile` falls back on)."""


def _copy_range(source: FileIO, fd: int, offset: int, count: int) -> int:
    """Append `count` bytes of `source` from `offset` to `fd`; the bytes copied (0 at end)."""
    if sys.platform == "linux" and _SENDFILE:
        try:
            return os.sendfile(fd, source.fileno(), offset, count)
        except OSError as error:
            if error.errno not in _NO_SENDFILE:
                raise
            # Refused before copying a byte: the plain copy below takes over.
    source.seek(offset)
    buffer = _buffer()[:count]
    got = source.readinto(buffer) or 0
    _write_all(fd, buffer[:got])
    return got


def _receive(
    source: Reader,
    wanted: Wanted,
    fd: int | None,
    on_bytes: Progress | None,
    cancel: threading.Event | None,
) -> None:
    """Read `source` to its end, checking it against `wanted` and writing it to `fd` (None:
    only check)."""
    digest = hashlib.sha256()
    head = b""
    done = 0
    report = _every_interval(on_bytes)
    buffer = _buffer()
    while count := source.readinto(buffer):
        if cancel is not None and cancel.is_set():
            raise Cancelled
        done += count
        if done > wanted.size:
            raise Rejected(f"the engine is longer than the {wanted.size} bytes recorded")
        chunk = buffer[:count]
        if len(head) < HEADER_SIZE:
            head += bytes(chunk[: HEADER_SIZE - len(head)])
        digest.update(chunk)
        if fd is not None:
            _write_all(fd, chunk)
        report(done)
    if done != wanted.size:
        raise _short(done, wanted)
    if digest.hexdigest() != wanted.sha256:
        raise Rejected(f"the engine's sha256 is {digest.hexdigest()[:12]}, not "
                       f"{wanted.sha256[:12]} as recorded (corrupt or poisoned entry)")
    check_header(head, wanted)
    if on_bytes is not None:
        on_bytes(done)


def _short(size: int, wanted: Wanted) -> Rejected:
    return Rejected(f"the engine has {size} bytes, {wanted.size} recorded (truncated?)")


def _every_interval(on_bytes: Progress | None) -> Progress:
    """`on_bytes` called at most once per PROGRESS_INTERVAL (the caller reports the end)."""
    reported = 0.0

    def report(done: int) -> None:
        nonlocal reported
        now = time.monotonic()
        if on_bytes is not None and now - reported >= PROGRESS_INTERVAL:
            on_bytes(done)
            reported = now

    return report


_BUFFERS = threading.local()


def _buffer() -> memoryview:
    """This thread's read buffer: making and zeroing 4 MiB costs a small engine's whole
    download, so each download thread makes one."""
    buffer: memoryview | None = getattr(_BUFFERS, "buffer", None)
    if buffer is None:
        buffer = _BUFFERS.buffer = memoryview(bytearray(CHUNK))
    return buffer


def check_header(head: bytes, wanted: Wanted) -> None:
    """The header's library version and CC mask (docs/tensorrt-rtx.md, "The engine header")
    must be this library's and the cell's, as a build's must."""
    try:
        header = read_header(head)
    except ValueError as error:
        raise Rejected(str(error)) from None
    if header.version != version_tuple(wanted.tensorrt_rtx):
        raise Rejected(f"the engine header says TensorRT-RTX {header.version_text}, this is "
                       f"{wanted.tensorrt_rtx}")
    if wanted.header_mask is not None and header.mask != wanted.header_mask:
        raise Rejected(f"the engine targets {' '.join(describe_mask(header.mask))}, the cell "
                       f"{' '.join(describe_mask(wanted.header_mask))}")


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


class _Unnamed:
    """A file in the engine's folder that gets the engine's name only on `commit`: a file
    with no name at all where the filesystem can link one in later, else a `.tmp-<pid>`
    sibling (which `matrix.build.temp_files` removes after a kill)."""

    def __init__(self, engine: Path) -> None:
        self.engine = engine
        self.named: Path | None = None
        self.fd = _open_unnamed(engine.parent)
        if self.fd < 0:
            self.named = temp_path(engine)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
            self.fd = os.open(self.named, flags, 0o666)  # O_BINARY: no newline translation

    def __enter__(self) -> _Unnamed:
        return self

    def commit(self) -> None:
        if self.named is None:
            self.named = temp_path(self.engine)
            with contextlib.suppress(FileNotFoundError):
                self.named.unlink()  # a leftover of a killed run that had our pid
            _link(self.fd, self.named)
        replace(self.named, self.engine)  # waits a moment for a reader (Windows)
        self.named = None

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        if self.named is not None:
            with contextlib.suppress(FileNotFoundError):
                self.named.unlink()


_LINKABLE: dict[int, bool] = {}
"""Per device: whether an O_TMPFILE file can be linked in. Not on every filesystem, nor in
every sandbox: this project's development VM answers EXDEV on ext4, so its tests go the
named-sibling way."""


def _open_unnamed(folder: Path) -> int:
    """An O_TMPFILE descriptor in `folder`, or -1 where one could not be named later."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return -1
    try:
        device = folder.stat().st_dev
        fd = os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError:
        return -1
    if device not in _LINKABLE:
        probe = folder / f".rtx-matrix-link-probe-{os.getpid()}"
        try:
            _link(fd, probe)
            probe.unlink()
            _LINKABLE[device] = True
        except OSError:
            _LINKABLE[device] = False
    if not _LINKABLE[device]:
        os.close(fd)
        return -1
    return fd


def _link(fd: int, path: Path) -> None:
    os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
