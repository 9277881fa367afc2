"""A bundle: the engines an application ships, and `bundle.json`, which says what each is.

Written by `rtx-matrix bundle` (`matrix.bundle.make`), read here by the application side:
`read_bundle` turns `bundle.json` into frozen objects (no JSON Schema check: that costs the
`jsonschema` import, and `select` must stay fast; `rtx-matrix bundle verify` does it), and
`verify_bundle` checks every file the bundle lists against its size and sha256.

`bundle.json` is written last, after every file it names is in place: a bundle whose writing
failed or was interrupted has none, and so never verifies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from matrix.atomic import sha256_file
from matrix.errors import InputError, Problem
from matrix.lockfile.io import stable_json, tensor_from_dict, tensor_to_dict
from matrix.lockfile.types import TensorSpec

BUNDLE_FILE = "bundle.json"
BUNDLE_VERSION = 1


class BundleDamaged(InputError):
    """A file of the bundle is missing or is not the one `bundle.json` lists (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class BundleFile:
    """One file refit reads: the ONNX model or one of its external-data files."""

    name: str
    """Relative to the model's folder, POSIX separators: where the ONNX parser looks for it."""
    size: int
    sha256: str
    path: str | None = None
    """Where it sits in the bundle (`bundle --with-onnx`); None when the application supplies
    the model itself."""


@dataclass(frozen=True)
class RefitNeeds:
    """What turning a weightless engine into a full one takes: the model's files, and the
    digests (as in the lockfile) that identify its graph and its weights."""

    files: tuple[BundleFile, ...]
    """The ONNX file first, then its external data."""
    digest: str
    graph_digest: str
    weights_digest: str

    @property
    def onnx(self) -> BundleFile:
        return self.files[0]

    @property
    def included(self) -> bool:
        return all(file.path is not None for file in self.files)


@dataclass(frozen=True)
class BundleEngine:
    cell: str
    """The cell id in the manifest and lockfile: `det@rtx40+weightless`."""
    model: str
    family: str
    path: str
    """Relative to the bundle's folder, POSIX separators."""
    sha256: str
    size: int
    tensorrt_rtx: str
    """The TensorRT-RTX version that built it."""
    targets: tuple[str, ...]
    """As the manifest asked: () default, ("current",), ("sm80", "sm86")."""
    built_for: tuple[str, ...]
    """The CCs the builder was given (`current` resolved); () for the library's default."""
    runs_on: tuple[str, ...]
    """CC names (`sm86`) and `newer` (GPUs newer than the library's table)."""
    weightless: bool
    dtypes: tuple[str, ...]
    """Every element type the model uses (fp32, fp16, fp8, ...)."""
    io: tuple[TensorSpec, ...] = ()
    weights_bytes: int | None = None
    stripped_weights_bytes: int | None = None
    refit: RefitNeeds | None = None
    """Set for weightless engines only."""


@dataclass(frozen=True)
class Family:
    name: str
    models: tuple[str, ...]
    """In manifest order: the order of preference."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    """The bundle's folder; engine paths are relative to it."""
    tool: str
    tensorrt_rtx: str
    families: tuple[Family, ...]
    engines: tuple[BundleEngine, ...]
    """In manifest order (model, target, weightless), as the plan lists the cells."""
    version: int = BUNDLE_VERSION

    def file(self, relative: str) -> Path:
        return self.root / PurePosixPath(relative)

    def engines_of(self, model: str) -> tuple[BundleEngine, ...]:
        return tuple(engine for engine in self.engines if engine.model == model)


# ------------------------------------------------------------------------------ reading


def read_bundle(root: Path | str) -> Bundle:
    """The bundle in folder `root`. InputError (exit 2), one line, when `bundle.json` is
    missing, unreadable, or not what `rtx-matrix bundle` writes."""
    root = Path(root)
    path = root / BUNDLE_FILE
    data = _load_json(path)
    try:
        return bundle_from_dict(data, root)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _bad(path, f"not a bundle this rtx-matrix reads ({_why(error)})") from None


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.parent.is_dir():
            message = f"no {BUNDLE_FILE}: not a bundle, or its writing did not finish"
            raise InputError([Problem(str(path.parent), message)]) from None
        raise InputError([Problem(str(path.parent), "no such bundle folder")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise _bad(path, f"cannot read it: {getattr(error, 'strerror', None) or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(path, f"not valid JSON ({error.msg} at line {error.lineno})") from None


def _bad(path: Path, message: str) -> InputError:
    return InputError([Problem(str(path), message)])


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing {error.args[0]!r}"
    return str(error)


def bundle_from_dict(data: Mapping[str, Any], root: Path) -> Bundle:
    if data["version"] != BUNDLE_VERSION:
        raise ValueError(f"bundle version {data['version']!r}; this rtx-matrix reads 1")
    return Bundle(
        root=root,
        tool=_str(data["tool"]),
        tensorrt_rtx=_str(data["tensorrt_rtx"]),
        families=tuple(
            Family(_str(f["name"]), tuple(_str(m) for m in f["models"])) for f in data["families"]
        ),
        engines=tuple(_engine(e) for e in data["engines"]),
    )


def _engine(data: Mapping[str, Any]) -> BundleEngine:
    refit = data.get("refit")
    return BundleEngine(
        cell=_str(data["cell"]),
        model=_str(data["model"]),
        family=_str(data["family"]),
        path=_relative(data["path"]),
        sha256=_str(data["sha256"]),
        size=_int(data["size"]),
        tensorrt_rtx=_str(data["tensorrt_rtx"]),
        targets=_strs(data["targets"]),
        built_for=_strs(data["built_for"]),
        runs_on=_strs(data["runs_on"]),
        weightless=_bool(data["weightless"]),
        dtypes=_strs(data["dtypes"]),
        io=tuple(tensor_from_dict(t) for t in data.get("io") or ()),
        weights_bytes=_optional_int(data.get("weights_bytes")),
        stripped_weights_bytes=_optional_int(data.get("stripped_weights_bytes")),
        refit=None if refit is None else _refit(refit),
    )


def _refit(data: Mapping[str, Any]) -> RefitNeeds:
    files = tuple(
        BundleFile(
            name=_relative(f["name"]),
            size=_int(f["size"]),
            sha256=_str(f["sha256"]),
            path=None if f.get("path") is None else _relative(f["path"]),
        )
        for f in data["files"]
    )
    if not files:
        raise ValueError("a weightless engine's refit lists no ONNX file")
    return RefitNeeds(
        files=files,
        digest=_str(data["digest"]),
        graph_digest=_str(data["graph_digest"]),
        weights_digest=_str(data["weights_digest"]),
    )


def _relative(value: Any) -> str:
    """A relative POSIX path that stays below its folder: a bundle never names a file
    elsewhere, whatever its `bundle.json` says."""
    text = _str(value)
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or "\\" in text or ":" in text:
        raise ValueError(f"{text!r} is not a path inside the bundle")
    return text


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}")
    return tuple(_str(v) for v in value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


# ------------------------------------------------------------------------------ writing


def bundle_to_json(bundle: Bundle) -> str:
    """Stable text: the same inputs give the same bytes. Sorted keys, lists in manifest order,
    and each engine's fields one a line (the lockfile's layout)."""
    return stable_json(bundle_to_dict(bundle), expanded_depth=2)


def bundle_to_dict(bundle: Bundle) -> dict[str, Any]:
    return {
        "version": bundle.version,
        "tool": bundle.tool,
        "tensorrt_rtx": bundle.tensorrt_rtx,
        "families": [{"name": f.name, "models": list(f.models)} for f in bundle.families],
        "engines": [engine_to_dict(engine) for engine in bundle.engines],
    }


def engine_to_dict(engine: BundleEngine) -> dict[str, Any]:
    refit = engine.refit
    return {
        "cell": engine.cell,
        "model": engine.model,
        "family": engine.family,
        "path": engine.path,
        "sha256": engine.sha256,
        "size": engine.size,
        "tensorrt_rtx": engine.tensorrt_rtx,
        "targets": list(engine.targets),
        "built_for": list(engine.built_for),
        "runs_on": list(engine.runs_on),
        "weightless": engine.weightless,
        "dtypes": list(engine.dtypes),
        "io": [tensor_to_dict(t) for t in engine.io],
        "weights_bytes": engine.weights_bytes,
        "stripped_weights_bytes": engine.stripped_weights_bytes,
        "refit": None if refit is None else {
            "files": [
                {"name": f.name, "size": f.size, "sha256": f.sha256, "path": f.path}
                for f in refit.files
            ],
            "digest": refit.digest,
            "graph_digest": refit.graph_digest,
            "weights_digest": refit.weights_digest,
        },
    }


# ----------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Verified:
    bundle: Bundle
    files: int
    """How many files were checked."""
    bytes: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def bundle_files(bundle: Bundle) -> dict[str, tuple[int, str]]:
    """Every file the bundle holds (relative path -> size, sha256), each once."""
    files: dict[str, tuple[int, str]] = {}
    for engine in bundle.engines:
        files[engine.path] = (engine.size, engine.sha256)
        for onnx in engine.refit.files if engine.refit else ():
            if onnx.path is not None:
                files[onnx.path] = (onnx.size, onnx.sha256)
    return files


def verify_bundle(root: Path | str) -> Verified:
    """Check every file `bundle.json` lists: present, its size, its sha256. Collects every
    problem (one line each) instead of stopping at the first; `bundle.json` itself must read
    (InputError otherwise)."""
    bundle = read_bundle(root)
    problems: list[Problem] = []
    total = 0
    files = bundle_files(bundle)
    for relative, (size, sha256) in files.items():
        problem = file_problem(bundle.file(relative), size, sha256)
        if problem is not None:
            problems.append(Problem(os.fspath(bundle.file(relative)), problem))
        else:
            total += size
    return Verified(bundle, len(files), total, tuple(problems))


def file_problem(path: Path, size: int, sha256: str | None) -> str | None:
    """Why `path` is not the file with this size and sha256; None when it is. With no
    `sha256`, the size alone is checked (for every launch: hashing is `verify`'s job)."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return f"missing ({BUNDLE_FILE} lists it)"
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    if actual != size:
        return f"{actual} bytes where {BUNDLE_FILE} lists {size}: not the file it names"
    if sha256 is None:
        return None
    try:
        digest = sha256_file(path)
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    if digest != sha256:
        return f"sha256 {digest} where {BUNDLE_FILE} lists {sha256}: the file was modified"
    return None


def check_bundle(root: Path | str) -> Verified:
    """`verify_bundle`, raising BundleDamaged (exit 1) listing every bad file."""
    verified = verify_bundle(root)
    if not verified.ok:
        raise BundleDamaged(verified.problems)
    return verified

