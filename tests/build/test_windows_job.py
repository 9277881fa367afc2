"""The Windows Job Object's structures, checked where they can be: on any 64-bit host the
layout is the one winnt.h gives x64 Windows (the calls themselves run only on Windows)."""

from __future__ import annotations

import ctypes

import pytest

from matrix.build.pools import windows_job
from matrix.build.pools.windows_job import (
    IO_COUNTERS,
    JOBOBJECT_BASIC_LIMIT_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
)

pytestmark = pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="x64 layout")


def test_the_structures_have_the_x64_windows_layout() -> None:
    basic, extended = JOBOBJECT_BASIC_LIMIT_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    assert ctypes.sizeof(IO_COUNTERS) == 48
    assert ctypes.sizeof(basic) == 64
    assert (basic.LimitFlags.offset, basic.MinimumWorkingSetSize.offset) == (16, 24)
    assert (basic.Affinity.offset, basic.SchedulingClass.offset) == (48, 60)
    assert ctypes.sizeof(extended) == 144
    assert (extended.IoInfo.offset, extended.ProcessMemoryLimit.offset) == (64, 112)


def test_the_limits_ask_only_for_kill_on_close() -> None:
    limits = windows_job.kill_on_close_limits()
    raw = bytes(limits)
    assert raw[16:20] == (0x2000).to_bytes(4, "little")  # LimitFlags: KILL_ON_JOB_CLOSE
    assert raw[:16] + raw[20:] == bytes(140)  # every other limit off
    ctypes.c_void_p.from_param(ctypes.byref(limits))  # SetInformationJobObject's LPVOID takes it
