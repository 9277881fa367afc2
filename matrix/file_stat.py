"""What stat() said about a file, and when that may stand for the file's content.

Several records trust a file by its stat instead of reading it (docs/caches.md):
- the stamps (`matrix.lockfile.stamps`): engines and the lock, with the sha256 they had;
- the facts cache (`matrix.facts.cache`): ONNX models and their external data;
- the plan and lock caches (`matrix.plan.cache`, `matrix.lockfile.cache`): the manifest, its
  models, the lockfile and rtx-matrix's own code;
- the survey's view of the lock (`matrix.lockfile.survey`): did a build rewrite it since?
- the verified marks (`matrix.engine_cache.verified`): folder-cache engines hashed before.

The racy rule (git's "racily clean" index entries): a file can change again within the same
tick of its filesystem's clock (2 s on FAT) without its size or mtime moving. So a stat taken
less than RACY_NS after the file's mtime cannot vouch for what was read: such a record is
marked racy and its file checked by content, or not kept, until a later run records it once
it has aged. Two records skip the rule, on purpose: a stamp, trusted as soon as it is
recorded like make would (`--verify` hashes every engine), and the survey's view of the
lock, compared within one run and always moved by a build, since every lock write renames a
new inode into place.
"""

from __future__ import annotations

import os
from typing import NamedTuple

RACY_NS = 2_000_000_000
"""Files modified this shortly before they were read may change without a new stat."""


class FileStat(NamedTuple):
    size: int
    mtime_ns: int
    ino: int
    """An atomic rewrite renames a new file into place: a new inode, even within one tick."""

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStat:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


def file_stat(path: str | os.PathLike[str]) -> FileStat | None:
    """The stat of the file at `path`, following symlinks; None when there is none."""
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileStat(stat.st_size, stat.st_mtime_ns, stat.st_ino)


def is_racy(stat: FileStat, read_at_ns: int) -> bool:
    """Whether `stat` cannot vouch for content read from `read_at_ns` on (`time.time_ns()`
    taken before the reading began): the file was modified too shortly before, or since."""
    return stat.mtime_ns > read_at_ns - RACY_NS
