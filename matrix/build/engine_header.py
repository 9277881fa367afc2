"""Reads the two facts rtx-matrix checks in a TensorRT-RTX engine's header.

The layout is undocumented; it was observed with tensorrt-rtx 1.7.1.116 (docs/tensorrt-rtx.md):
bytes 24..27 hold the library version, one byte per part (01 07 01 74 = 1.7.1.116), and
bytes 32..39 a little-endian bitmask of the compute capabilities the engine was compiled for
(bit i = `capabilities.KNOWN[i]`, bit 6 = GPUs newer than the newest known CC).
Pure: no tensorrt_rtx import, so the parent process and `--verify` can use it cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from matrix.plan.capabilities import KNOWN, NEWER, ccs_of_mask

_VERSION = slice(24, 28)
_MASK = slice(32, 40)
HEADER_SIZE = _MASK.stop
# Bits above "newer" were never observed; a header that sets them is not one we understand.
_VALID_BITS = (1 << (len(KNOWN) + 1)) - 1


@dataclass(frozen=True)
class EngineHeader:
    version: tuple[int, int, int, int]
    mask: int

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def targets(self) -> tuple[str, ...]:
        """CC names the header lists, `newer` last: ("sm80", ..., "newer")."""
        return describe_mask(self.mask)


def describe_mask(mask: int) -> tuple[str, ...]:
    ccs, newer = ccs_of_mask(mask)
    return tuple(cc.name for cc in ccs) + ((NEWER,) if newer else ())


def version_tuple(version: str) -> tuple[int, int, int, int]:
    """`"1.7.1.116"` -> (1, 7, 1, 116), the way the header stores it."""
    parts = tuple(int(p) for p in version.split(".")[:4])
    if len(parts) != 4:
        raise ValueError(f"{version!r} is not a four-part TensorRT-RTX version")
    return parts[0], parts[1], parts[2], parts[3]


def read_header(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> EngineHeader:
    """Header of an engine file (path) or of serialized engine bytes.

    Raises ValueError when the data is too short or its fields hold impossible values.
    """
    data = _head(source)
    if len(data) < HEADER_SIZE:
        raise ValueError(f"not a TensorRT-RTX engine: {len(data)} bytes, header needs "
                         f"{HEADER_SIZE}")
    version = (data[24], data[25], data[26], data[27])
    mask = int.from_bytes(data[_MASK], "little")
    if version[0] == 0 or mask == 0 or mask & ~_VALID_BITS:
        raise ValueError(f"not a TensorRT-RTX engine header: version "
                         f"{'.'.join(map(str, version))}, CC mask {mask:#x}")
    return EngineHeader(version=version, mask=mask)


def _head(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:HEADER_SIZE])
    with open(source, "rb") as f:
        return f.read(HEADER_SIZE)
