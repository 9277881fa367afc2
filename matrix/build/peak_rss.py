"""A worker's peak resident memory during one build, for the lock's `peak_rss_bytes`.

A worker builds many cells, and the kernel's high-water mark (`ru_maxrss`, `VmHWM`) covers
the process's whole life. On Linux the mark is reset before each build (writing 5 to
/proc/self/clear_refs, Linux 4.0+) and `VmHWM` read after it: that build's own peak.
Elsewhere, or where /proc refuses the reset, `ru_maxrss` says a build's peak only when the
build raised the mark; otherwise the peak is unknown (None), and the next run estimates it.
"""

from __future__ import annotations

import sys


class PeakMeter:
    def __init__(self) -> None:
        self._mark_before: int | None = None
        self._resettable = sys.platform.startswith("linux")

    def start(self) -> None:
        """Call just before a build."""
        if self._resettable:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                    refs.write("5")
                return
            except OSError:
                self._resettable = False
        self._mark_before = _max_rss()

    def peak(self) -> int | None:
        """Bytes: the peak since `start`, or None when it cannot be told."""
        if self._resettable:
            return _vm_hwm()
        after = _max_rss()
        if after is None or self._mark_before is None or after <= self._mark_before:
            return None
        return after


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _max_rss() -> int | None:
    if sys.platform == "win32":  # no `resource` module there
        return None
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS counts bytes
