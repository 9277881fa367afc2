"""Whether the kernel's out-of-memory killer ended a worker.

A worker found dead of SIGKILL that nobody here sent was killed by the OOM killer when the
kernel's count of OOM kills went up while it built: the `oom_kill` line of /proc/vmstat
(Linux 4.13+; it counts every OOM kill on the machine, those of a cgroup's limit included).
`RTX_MATRIX_OOM_EVENTS` names another file with an `oom_kill N` line instead: a cgroup v2
`memory.events`, a v1 `memory.oom_control`, or a test playing the kernel. Where there is no
such count, a SIGKILL stays an unexplained death.
"""

from __future__ import annotations

import os
import signal

OOM_EVENTS_ENV = "RTX_MATRIX_OOM_EVENTS"
_DEFAULT = "/proc/vmstat"
_SIGKILL = getattr(signal, "SIGKILL", 9)


def oom_kills() -> int | None:
    """The kernel's count of OOM kills so far, or None where it keeps none."""
    try:
        with open(os.environ.get(OOM_EVENTS_ENV) or _DEFAULT, "rb") as events:
            text = events.read()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def killed_by_oom(exitcode: int, kills_before: int | None) -> bool:
    """A worker's end: SIGKILL, and the OOM count went up since `kills_before` (read when
    its cell was handed out)."""
    if exitcode != -_SIGKILL or kills_before is None:
        return False
    now = oom_kills()
    return now is not None and now > kills_before
