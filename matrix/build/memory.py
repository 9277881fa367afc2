"""How much memory each build is expected to need, and which cells may build at once.

A cell's expected peak is the `peak_rss_bytes` its last build recorded in the lock, while its
model is unchanged; else an estimate from the model's bytes (file and external data, nearly
all weights for a big model): a TensorRT-RTX 1.7.1 build peaks at about 3 times the weights
plus 180 MiB, whatever the model's shape (docs/tensorrt-rtx.md, "Memory of a build").
The executor never starts a cell that would push the expected peaks of the cells building
past the budget; a cell that alone exceeds it builds alone.

Pure except `available_memory`, which reads the kernel's figure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

GiB = 1 << 30
MiB = 1 << 20

WEIGHT_FACTOR = 3.1
"""Peak resident memory of a build per byte of model: 3.0 measured, rounded up."""
LIBRARY_BYTES = 200 * MiB
"""What a build needs beyond its weights: the library (~115 MiB once imported) and its
buffers; 180 MiB measured, rounded up."""
MARGIN_SHARE = 0.10
MIN_MARGIN = 512 * MiB
"""The default budget leaves this much of the available memory (the larger) to the rest of
the machine: this process, idle workers, the page cache the builds write through."""


def estimate_peak(model_bytes: int) -> int:
    return LIBRARY_BYTES + int(WEIGHT_FACTOR * model_bytes)


def expected_peak(recorded: int | None, model_bytes: int) -> int:
    """The peak a build recorded last time, else the estimate from its model's size."""
    return recorded if recorded else estimate_peak(model_bytes)


def default_budget(available: int | None) -> int | None:
    """The memory available now less a margin; None (no limit) when it is unknown."""
    if available is None:
        return None
    return max(available - max(int(available * MARGIN_SHARE), MIN_MARGIN), 0)


def available_memory(meminfo: str | None = None) -> int | None:
    """Bytes the kernel says new work can take without swapping: `MemAvailable` from
    /proc/meminfo on Linux (`meminfo`: its text, for tests), the available physical memory
    on Windows, else free physical pages where `sysconf` knows them, else None."""
    if sys.platform == "win32":
        return _windows_available()
    if meminfo is None:
        try:
            with open("/proc/meminfo", encoding="ascii") as source:
                meminfo = source.read()
        except OSError:
            meminfo = ""
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            number, _, unit = value.strip().partition(" ")
            return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _windows_available() -> int | None:
    import ctypes
    from ctypes import wintypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("dwLength", wintypes.DWORD),
            ("dwMemoryLoad", wintypes.DWORD),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    kernel32 = getattr(ctypes, "windll").kernel32  # noqa: B009 (Windows only, untyped elsewhere)
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def memory_text(size: int) -> str:
    """`6.3 GiB`, `950 MiB`: how a memory need or budget is shown (binary units, as memory
    is; transfers use `matrix.build.progress.size_text`)."""
    if size >= GiB:
        return f"{size / GiB:.1f} GiB"
    return f"{max(size, 0) / MiB:.0f} MiB"


def oversized(needs: Mapping[str, int], budget: int | None) -> list[str]:
    """The cells whose expected peak alone exceeds the budget: each builds alone."""
    if budget is None:
        return []
    return [cell for cell, need in needs.items() if need > budget]


def oversized_warning(cell: str, need: int, budget: int,
                      budget_name: str = "the budget") -> str:
    return (
        f"warning: {cell} needs about {memory_text(need)} of memory, more than "
        f"{budget_name} of {memory_text(budget)}: it builds alone"
    )


class Waiting(Protocol):
    """A cell waiting to start, as the gate sees it."""

    @property
    def need(self) -> int:
        """Its expected peak, in bytes."""

    @property
    def alone(self) -> bool:
        """Whether it must build with nothing beside it (retried after running out of
        memory)."""


@dataclass
class MemoryGate:
    """The expected peaks of the cells building, against `budget` (None: no limit).

    A cell may start when nothing builds, or when it fits beside what does. A cell that
    alone exceeds the budget therefore builds alone; one marked `alone` builds alone even
    when it would fit. Not thread-safe: one hand-out loop owns it.
    """

    budget: int | None
    in_use: int = 0
    building: int = 0
    exclusive: bool = False

    def fits(self, need: int, alone: bool = False) -> bool:
        if self.building == 0:
            return True
        if alone or self.exclusive:
            return False
        return self.budget is None or self.in_use + need <= self.budget

    def take(self, need: int, alone: bool = False) -> None:
        self.building += 1
        self.in_use += need
        self.exclusive = self.exclusive or alone

    def give_back(self, need: int) -> None:
        self.building -= 1
        self.in_use -= need
        if self.building == 0:
            self.in_use = 0
            self.exclusive = False

    def next_to_start(self, waiting: Sequence[Waiting]) -> int | None:
        """Index of the first waiting cell that may start now, or None.

        Smaller cells further down fill the room a big one cannot use yet; only a cell
        marked `alone` keeps the ones behind it waiting, so it starts as soon as the cells
        building now are done.
        """
        for index, cell in enumerate(waiting):
            if self.fits(cell.need, cell.alone):
                return index
            if cell.alone:
                return None
        return None
