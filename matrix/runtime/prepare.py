"""First launch: the engine file each family loads on this GPU, refitting weightless ones once.

`prepare` selects (`matrix.runtime.select`); a full engine is loaded from the bundle as it
is. A weightless engine is refitted from its ONNX model (`OnnxParserRefitter`), checked with
`Runtime.get_engine_validity`, and written atomically into a per-user cache, under a key of
everything that makes a refitted engine right for this machine: the weightless engine's
sha256, the GPU (its UUID, else its CC), the driver and TensorRT-RTX versions, and the
weights. Later launches find it there and refit nothing.

A cached engine is trusted only when its sha256 matches the one recorded beside it, so a
damaged one is refitted again. Two application instances starting at once take a file lock
per cache entry: one refits, the other waits for it and then loads the result. A reader that
does not lock never sees a half-written engine (each file is renamed into place).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Protocol

from matrix import gpu as gpus
from matrix.atomic import sha256_file, write_atomic
from matrix.errors import InputError, OutputBusy, Problem
from matrix.file_lock import Busy, file_lock
from matrix.runtime.bundle import (
    Bundle,
    BundleDamaged,
    BundleEngine,
    RefitNeeds,
    file_problem,
    read_bundle,
)
from matrix.runtime.select import Selection, select

CACHE_SUBDIR = "refitted"
"""Inside `matrix.cache_dir.cache_dir()`, the default cache folder."""


class Refitter(Protocol):
    """Turns a weightless engine into a full one on this process's GPU.

    `TensorRtRefitter` is the real one; unit tests of the cache's decisions pass a stand-in
    (this host has no GPU to refit on).
    """

    def refit(self, engine: Path, onnx: Path) -> bytes | memoryview: ...

    def invalid(self, blob: bytes | memoryview) -> str | None:
        """Why TensorRT-RTX would not load `blob` here; None when it would."""
        ...


class TensorRtRefitter:
    """The library's refit (`matrix.runtime.refit`); imports tensorrt_rtx when first used."""

    def refit(self, engine: Path, onnx: Path) -> bytes | memoryview:
        from matrix.runtime.refit import refit_blob

        return refit_blob(engine, onnx)

    def invalid(self, blob: bytes | memoryview) -> str | None:
        from matrix.runtime.refit import invalid_here

        return invalid_here(blob)


@dataclass(frozen=True)
class Ready:
    """The engine a family loads, and where it is on disk."""

    family: str
    engine: BundleEngine
    path: Path
    refitted: bool = False
    """This call refitted it (a first launch)."""
    cached: bool = False
    """`path` is in the refit cache (the engine is weightless in the bundle)."""


@dataclass(frozen=True)
class Prepared:
    selection: Selection
    ready: Mapping[str, Ready]
    """Family -> its engine, ready to deserialize."""

    @property
    def missing(self) -> Mapping[str, str]:
        """Families with no engine for this GPU, and why."""
        return self.selection.missing

    def path(self, family: str) -> Path:
        return self.ready[family].path


def prepare(
    bundle: Bundle | Path | str,
    gpu: gpus.Gpu | int | None = None,
    cache_dir: Path | str | None = None,
    *,
    onnx: Mapping[str, Path | str] | None = None,
    refitter: Refitter | None = None,
    wait: float = math.inf,
    on_progress: Callable[[str], None] | None = None,
) -> Prepared:
    """The engine file each family of `bundle` loads on `gpu`, refitted and cached if needed.

    `gpu`: a `matrix.gpu.Gpu`, an NVML index (as nvidia-smi numbers GPUs), or None for the
    first GPU TensorRT-RTX supports. A refit runs on CUDA's current device in this process:
    make it that GPU (`matrix.gpu.cuda_env(gpu)` in the environment before CUDA starts).
    `cache_dir`: where refitted engines are kept (default: the per-user cache,
    `matrix.cache_dir.cache_dir() / "refitted"`). `onnx`: model name -> ONNX file, for
    weightless engines whose bundle does not carry its model (`bundle` without
    `--with-onnx`); it must be the model the bundle names (checked by size and sha256).
    `wait`: seconds to wait for another instance refitting the same engine.
    `on_progress`: called with a line before a refit (which takes seconds) or a wait.

    Raises GpuError (exit 3) without a usable GPU, BundleDamaged (exit 1) for a bundle file
    that is not what bundle.json says, InputError (exit 2) for a missing or different ONNX
    model, RefitFailed (exit 1) when TensorRT-RTX cannot refit.
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    chosen = _gpu(gpu)
    selection = select(bundle, chosen)
    cache = RefitCache(
        Path(cache_dir) if cache_dir is not None else _default_cache(),
        refitter or TensorRtRefitter(),
        wait,
        on_progress,
    )
    ready = {
        family: _ready(bundle, choice.engine, family, chosen, cache, onnx or {})
        for family, choice in selection.chosen.items()
    }
    return Prepared(selection, MappingProxyType(ready))


def _gpu(gpu: gpus.Gpu | int | None) -> gpus.Gpu:
    if isinstance(gpu, gpus.Gpu):
        return gpu
    inventory = gpus.discover()
    return inventory.pick() if gpu is None else inventory.at(gpu, "gpu")


def _default_cache() -> Path:
    from matrix.cache_dir import cache_dir

    return cache_dir() / CACHE_SUBDIR


def _ready(
    bundle: Bundle,
    engine: BundleEngine,
    family: str,
    gpu: gpus.Gpu,
    cache: RefitCache,
    onnx: Mapping[str, Path | str],
) -> Ready:
    path = bundle.file(engine.path)
    if not engine.weightless:
        # Size only: hashing every engine at every launch is `bundle verify`'s job.
        _check_size(path, engine.size)
        return Ready(family, engine, path)
    if engine.refit is None:
        raise _damaged(bundle.file("bundle.json"), f"{engine.cell} is weightless but says "
                                                   "nothing of its ONNX model")
    found, refitted = cache.get(
        engine, gpu, lambda: (_checked_engine(bundle, engine), _model(bundle, engine, onnx))
    )
    return Ready(family, engine, found, refitted=refitted, cached=True)


def _check_size(path: Path, size: int) -> None:
    problem = file_problem(path, size, None)
    if problem is not None:
        raise _damaged(path, problem)


def _checked_engine(bundle: Bundle, engine: BundleEngine) -> Path:
    path = bundle.file(engine.path)
    problem = file_problem(path, engine.size, engine.sha256)
    if problem is not None:
        raise _damaged(path, problem)
    return path


def _damaged(path: Path, message: str) -> BundleDamaged:
    return BundleDamaged([Problem(str(path), message)])


def _model(bundle: Bundle, engine: BundleEngine, onnx: Mapping[str, Path | str]) -> Path:
    """The ONNX file to refit `engine` from, checked file by file against bundle.json."""
    needs = engine.refit
    assert needs is not None
    if needs.included:
        for file in needs.files:
            assert file.path is not None
            problem = file_problem(bundle.file(file.path), file.size, file.sha256)
            if problem is not None:
                raise _damaged(bundle.file(file.path), problem)
        return bundle.file(needs.files[0].path or "")
    given = onnx.get(engine.model)
    if given is None:
        raise InputError(
            f"{engine.cell} is weightless and its bundle does not carry {needs.onnx.name}: pass "
            f"onnx={{{engine.model!r}: PATH}} (--onnx {engine.model}=PATH), or bundle with "
            "--with-onnx"
        )
    _check_supplied(Path(given), needs, engine.model)
    return Path(given)


def _check_supplied(model: Path, needs: RefitNeeds, name: str) -> None:
    problems = []
    for file in needs.files:
        path = model if file is needs.onnx else model.parent / PurePosixPath(file.name)
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(Problem(str(path), f"missing: the {name} model needs it"))
            continue
        if size != file.size or sha256_file(path) != file.sha256:
            problems.append(Problem(
                str(path), f"not the {name} model the bundle was built for (it has other bytes)"
            ))
    if problems:
        raise InputError(problems)


# ------------------------------------------------------------------------- the refit cache


@dataclass(frozen=True)
class CacheEntry:
    engine: Path
    record: Path
    """JSON beside the engine: its sha256 and size, and the key's parts for people to read."""
    lock: Path


_Inputs = Callable[[], tuple[Path, Path]]
"""Gives (the weightless engine, its ONNX model), checked: called only when refitting."""


class RefitCache:
    """Refitted engines, one per (weightless engine, GPU, driver, library, weights)."""

    def __init__(
        self, folder: Path, refitter: Refitter, wait: float = math.inf,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = folder
        self.refitter = refitter
        self.wait = wait
        self.say = on_progress or (lambda line: None)

    def get(
        self, engine: BundleEngine, gpu: gpus.Gpu, inputs: _Inputs
    ) -> tuple[Path, bool]:
        """(the cached full engine, whether this call refitted it)."""
        key = cache_key(engine, gpu)
        entry = self.entry(engine, key)
        if self.holds(entry):
            return entry.engine, False
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with self._locked(entry, engine):
                if self.holds(entry):  # another instance refitted it while we waited
                    return entry.engine, False
                weightless, onnx = inputs()
                self.say(f"refitting {engine.cell} from {onnx} on {gpu.label} (once per GPU, "
                         "driver and TensorRT-RTX version)")
                self._refit(entry, engine, gpu, key, weightless, onnx)
        except Busy:
            raise OutputBusy(f"{entry.lock}: another process has been refitting {engine.cell} "
                           f"for over {self.wait:g} s") from None
        return entry.engine, True

    @contextlib.contextmanager
    def _locked(self, entry: CacheEntry, engine: BundleEngine) -> Iterator[None]:
        """The entry's lock; when another process holds it, says so before waiting."""
        try:
            with file_lock(entry.lock, 0.0):
                yield
            return
        except Busy:
            if self.wait <= 0:
                raise
        self.say(f"waiting for another process refitting {engine.cell}")
        with file_lock(entry.lock, self.wait):
            yield

    def entry(self, engine: BundleEngine, key: str) -> CacheEntry:
        stem = f"{engine.cell}.{key}"
        return CacheEntry(
            self.folder / f"{stem}.engine",
            self.folder / f"{stem}.json",
            self.folder / f"{stem}.lock",
        )

    def holds(self, entry: CacheEntry) -> bool:
        """Whether the cached engine is there and is the one its record names."""
        try:
            record = json.loads(entry.record.read_text(encoding="utf-8"))
            size, sha256 = int(record["size"]), str(record["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return file_problem(entry.engine, size, sha256) is None

    def _refit(
        self, entry: CacheEntry, engine: BundleEngine, gpu: gpus.Gpu, key: str,
        weightless: Path, onnx: Path,
    ) -> None:
        from matrix.runtime.refit import RefitFailed

        blob = self.refitter.refit(weightless, onnx)
        why = self.refitter.invalid(blob)
        if why is not None:
            raise RefitFailed(f"{engine.cell}: the refitted engine does not load on "
                              f"{gpu.label}: {why}")
        # Not fsynced: a cache. A power cut that tears the engine leaves a file whose sha256
        # no longer matches its record, and the next launch refits it again.
        entry.record.unlink(missing_ok=True)
        write_atomic(entry.engine, blob, durable=False)
        record = {
            "cell": engine.cell,
            "key": key,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "size": len(blob),
            **key_parts(engine, gpu),
            "refitted_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        write_atomic(entry.record, json.dumps(record, indent=2, sort_keys=True) + "\n",
                     durable=False)


def key_parts(engine: BundleEngine, gpu: gpus.Gpu) -> dict[str, str]:
    """What makes a refitted engine right for this machine, as the cache key hashes it."""
    from matrix.versions import installed_tensorrt_rtx

    assert engine.refit is not None
    return {
        "weightless_sha256": engine.sha256,
        "gpu": gpu.uuid or gpu.cc.name,
        "driver": gpu.driver or "unknown",
        "tensorrt_rtx": installed_tensorrt_rtx(),
        "weights_digest": engine.refit.weights_digest,
    }


def cache_key(engine: BundleEngine, gpu: gpus.Gpu) -> str:
    canonical = json.dumps(key_parts(engine, gpu), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
