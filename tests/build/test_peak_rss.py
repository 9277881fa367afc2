"""A worker's peak memory is measured per build, though the process lives on."""

from __future__ import annotations

import sys

import pytest

from matrix.build.peak_rss import PeakMeter

MiB = 1 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the mark is reset on Linux")
def test_each_build_gets_its_own_peak() -> None:
    meter = PeakMeter()
    meter.start()
    big = bytearray(300 * MiB)  # zero-filled pages count once touched
    big[:: 4096] = b"x" * len(big[:: 4096])
    first = meter.peak()
    del big
    meter.start()
    small = bytearray(20 * MiB)
    small[:: 4096] = b"x" * len(small[:: 4096])
    second = meter.peak()
    assert first is not None and second is not None
    assert first >= 300 * MiB
    assert second < first - 250 * MiB  # not the high-water mark of the first
