"""Plans remembered by the stats of what they were made from, so that an unchanged project
skips YAML, the schema, the facts cache and the planner (two fifths of a no-op `build`).

One entry per manifest path in the cache folder (`plans/`): what the plan was made from, then
the pickled Plan. Its sources are the manifest's `FileStat`; for each ONNX file its path as
the manifest writes it, as resolved, and the FileStats of it and its external data; the
TensorRT-RTX version whose rules judged the cells; and the FileStats of rtx-matrix's own code
and manifest schema, so that an edited planner or a new release never serves an old verdict.
A plan is stored only when no source is racy (`matrix.file_stat`): one modified around the
time it was read is read again next time. A hit re-checks what the file system may change
behind those stats: the output folder must still stay inside the manifest's folder (a
symlink can move it), and each model path must still resolve to the same file. How entries
are kept, and why only the user's own are read: `matrix.pickle_cache`.
"""

from __future__ import annotations

import os
import stat as stat_mode
from pathlib import Path
from typing import NamedTuple

from matrix import pickle_cache
from matrix.file_stat import FileStat, file_stat, is_racy
from matrix.manifest.output import output_escape
from matrix.pickle_cache import CodeStats, code_as_imported
from matrix.plan.types import Plan
from matrix.versions import installed_tensorrt_rtx

FORMAT = 1
"""Bump when an entry's layout changes (code changes are caught by the code's stats)."""
KEEP = 200
"""Entries kept, one per manifest: the least recently stored go first."""


class Source(NamedTuple):
    """One ONNX file of the plan."""

    onnx: str
    """As the manifest writes it, relative to the manifest's folder."""
    resolved: str
    stat: FileStat
    external: tuple[tuple[str, FileStat], ...]
    """Each external-data file, by its name relative to the model's folder."""


class Sources(NamedTuple):
    """Everything a plan was made from, checked before the plan itself is unpickled."""

    format: int
    manifest: str
    """Absolute path, as `Manifest.path`."""
    manifest_stat: FileStat
    output: tuple[str, str]
    """The output folder as written and as made absolute, for `output_escape`."""
    tensorrt_rtx: str
    code: CodeStats | None
    models: tuple[Source, ...]


def load(manifest_path: Path) -> Plan | None:
    """The plan remembered for the manifest at `manifest_path` when nothing it was made from
    has changed; None otherwise (a missing, foreign or unreadable entry included)."""
    entry = entry_path(os.path.abspath(manifest_path))
    plan = pickle_cache.load(entry, lambda key: isinstance(key, Sources) and unchanged(key))
    return plan if isinstance(plan, Plan) else None


def store(manifest_path: Path, plan: Plan, read_at_ns: int) -> None:
    """Remember `plan`, made from files read from `read_at_ns` (`time.time_ns()`) on, unless
    one of them is racy."""
    sources = sources_of(plan)
    if sources is None or any(is_racy(stat, read_at_ns) for stat in _stats(sources)):
        return
    pickle_cache.store(entry_path(os.path.abspath(manifest_path)), sources, plan, KEEP)


def entry_path(manifest: str) -> Path:
    return pickle_cache.entry_path("plans", manifest)


def sources_of(plan: Plan) -> Sources | None:
    """What `plan` was made from, as the file system shows it now; None when a file is gone."""
    manifest = plan.manifest
    stat = _stat(str(manifest.path))
    models: dict[str, Source] = {}
    for model in manifest.models:
        resolved = str(model.onnx)
        if resolved in models:
            continue
        facts = plan.facts.get(model.name)
        found = _stat(resolved)
        external = None if facts is None else _external_stats(resolved, facts.external_files)
        if found is None or external is None:
            return None
        models[resolved] = Source(model.onnx_rel, resolved, found, external)
    if stat is None:
        return None
    output = (manifest.output_rel, str(manifest.output))
    code = code_as_imported()
    if code is None:
        return None
    return Sources(
        FORMAT,
        str(manifest.path),
        stat,
        output,
        installed_tensorrt_rtx(),
        code,
        tuple(models.values()),
    )


def unchanged(sources: Sources) -> bool:
    """Whether the plan made from `sources` still holds. The cheapest checks come first."""
    if sources.format != FORMAT or _stat(sources.manifest) != sources.manifest_stat:
        return False
    if installed_tensorrt_rtx() != sources.tensorrt_rtx or code_as_imported() != sources.code:
        return False
    root = os.path.dirname(sources.manifest)
    raw, output = sources.output
    if output_escape(raw, Path(root), Path(output)) is not None:
        return False  # the loader will say why
    real_folders: dict[str, str] = {}
    for source in sources.models:
        found = _resolve(os.path.join(root, source.onnx), real_folders)
        names = tuple(name for name, _ in source.external)
        if found != (source.resolved, source.stat):
            return False
        if _external_stats(source.resolved, names) != source.external:
            return False
    return True


def _stats(sources: Sources) -> list[FileStat]:
    stats = [sources.manifest_stat]
    for source in sources.models:
        stats += [source.stat, *(stat for _, stat in source.external)]
    return stats


def _stat(path: str) -> FileStat | None:
    try:
        return file_stat(path)
    except OSError:
        return None


def _external_stats(model: str, names: tuple[str, ...]) -> tuple[tuple[str, FileStat], ...] | None:
    """As the facts cache sees them: relative to the resolved model's folder."""
    folder = os.path.dirname(model)
    stats = []
    for name in names:
        found = _stat(os.path.join(folder, name))
        if found is None:
            return None
        stats.append((name, found))
    return tuple(stats)


def _resolve(path: str, real_folders: dict[str, str]) -> tuple[str, FileStat] | None:
    """What the loader's `Path.resolve()` makes of `path`, and the file's stat; None when it
    is gone. Resolves each folder once and stats each file once (with lstat, which also
    says whether the file itself is a symlink): 1,000 models cost ~1,000 calls, not ~5,000."""
    folder, name = os.path.split(path)
    try:
        if os.name == "posix" and name not in ("", ".", ".."):
            real_folder = real_folders.get(folder)
            if real_folder is None:
                real_folder = real_folders[folder] = os.path.realpath(folder)
            link = os.lstat(path)
            if not stat_mode.S_ISLNK(link.st_mode):
                return os.path.join(real_folder, name), FileStat.of(link)
        resolved = os.path.realpath(path)
        return resolved, FileStat.of(os.stat(resolved))
    except OSError:
        return None
