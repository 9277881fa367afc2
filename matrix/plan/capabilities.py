"""GPU compute capabilities as TensorRT-RTX names them, and every spelling users write."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class CC:
    """One compute capability, e.g. CC(8, 6) for Ampere GA10x."""

    major: int
    minor: int

    @property
    def name(self) -> str:
        """Canonical spelling used in ids, the lock and reports: `sm86`."""
        return f"sm{self.major}{self.minor}"

    @property
    def dotted(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def trt_name(self) -> str:
        """Member name of `tensorrt_rtx.ComputeCapability`."""
        return f"SM{self.major}{self.minor}"

    def __str__(self) -> str:
        return self.name


SM75 = CC(7, 5)
SM80 = CC(8, 0)
SM86 = CC(8, 6)
SM89 = CC(8, 9)
SM120 = CC(12, 0)
SM121 = CC(12, 1)

# Order matters: it is the bit order of the engine header's CC mask (bit 6 = newer GPUs).
KNOWN: tuple[CC, ...] = (SM75, SM80, SM86, SM89, SM120, SM121)
NEWER = "newer"
"""Stands in `runs_on` for GPUs newer than the newest known CC (header bit 6)."""

_SPELLING = re.compile(r"^(?:k?sm_?)?(\d{1,2})\.?(\d)$", re.IGNORECASE)


def parse_cc(text: object) -> CC:
    """Parse `sm86`, `SM86`, `"8.6"`, `86`, `8.6`, `kSM86` into a CC.

    Raises ValueError naming the spelling when it is not a CC at all. A well-formed CC that
    TensorRT-RTX does not target (sm90) parses; `is_known` tells it apart.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a compute capability")
    if isinstance(text, float):
        text = f"{text:.1f}"
    raw = str(text).strip()
    match = _SPELLING.match(raw)
    if not match:
        raise ValueError(f'{raw!r} is not a compute capability (write it as sm86 or "8.6")')
    return CC(int(match.group(1)), int(match.group(2)))


def looks_like_cc(text: object) -> bool:
    try:
        parse_cc(text)
    except ValueError:
        return False
    return True


def is_known(cc: CC) -> bool:
    return cc in KNOWN


def mask_of(ccs: tuple[CC, ...], newer: bool = False) -> int:
    """Engine-header bitmask for these CCs (bit i = KNOWN[i], bit 6 = newer GPUs)."""
    mask = 0
    for cc in ccs:
        mask |= 1 << KNOWN.index(cc)
    if newer:
        mask |= 1 << len(KNOWN)
    return mask


def ccs_of_mask(mask: int) -> tuple[tuple[CC, ...], bool]:
    """Inverse of `mask_of`: the CCs named by a header mask, and whether newer GPUs are in."""
    ccs = tuple(cc for i, cc in enumerate(KNOWN) if mask & (1 << i))
    return ccs, bool(mask & (1 << len(KNOWN)))
