"""Memory-aware scheduling: expected peaks, the budget, and which cell may start (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from matrix.build import memory
from matrix.build.memory import GiB, MemoryGate, MiB


@dataclass(frozen=True)
class Cell:
    name: str
    need: int
    alone: bool = False


def test_estimate_is_the_library_plus_three_times_the_weights() -> None:
    # Measured peaks (bench/bench_large.py): 64 MiB -> 382 MiB, 2 GiB -> 6334 MiB.
    assert 382 * MiB <= memory.estimate_peak(64 * MiB) <= 420 * MiB
    assert 6334 * MiB <= memory.estimate_peak(2 * GiB) <= 6.6 * GiB


def test_a_recorded_peak_wins_over_the_estimate() -> None:
    assert memory.expected_peak(700 * MiB, 2 * GiB) == 700 * MiB
    assert memory.expected_peak(None, 2 * GiB) == memory.estimate_peak(2 * GiB)


def test_default_budget_leaves_a_margin() -> None:
    assert memory.default_budget(None) is None
    assert memory.default_budget(64 * GiB) == 64 * GiB - int(6.4 * GiB)
    assert memory.default_budget(2 * GiB) == int(1.5 * GiB)  # at least 512 MiB left
    assert memory.default_budget(100 * MiB) == 0


def test_available_memory_reads_mem_available() -> None:
    meminfo = "MemTotal:       24683568 kB\nMemFree:  19582164 kB\nMemAvailable:   23590172 kB\n"
    assert memory.available_memory(meminfo) == 23590172 * 1024


def test_available_memory_of_this_machine() -> None:
    available = memory.available_memory()
    assert available is not None and available > 0


def test_size_text() -> None:
    assert memory.memory_text(int(6.34 * GiB)) == "6.3 GiB"
    assert memory.memory_text(950 * MiB) == "950 MiB"


def test_cells_over_the_budget_are_named_in_a_warning() -> None:
    needs = {"big@default": 7 * GiB, "small@sm86": 300 * MiB}
    assert memory.oversized(needs, 4 * GiB) == ["big@default"]
    assert memory.oversized(needs, None) == []
    assert memory.oversized_warning("big@default", 7 * GiB, 4 * GiB) == (
        "warning: big@default needs about 7.0 GiB of memory, more than the budget of "
        "4.0 GiB: it builds alone"
    )


def start_all(gate: MemoryGate, waiting: list[Cell], slots: int = 16) -> list[str]:
    """What the executor's hand-out loop starts now, in order."""
    started = []
    while waiting and gate.building < slots:
        index = gate.next_to_start(waiting)
        if index is None:
            break
        cell = waiting.pop(index)
        gate.take(cell.need, cell.alone)
        started.append(cell.name)
    return started


def test_cells_start_while_their_peaks_fit_the_budget() -> None:
    gate = MemoryGate(10 * GiB)
    waiting = [Cell("a", 4 * GiB), Cell("b", 4 * GiB), Cell("c", 4 * GiB)]
    assert start_all(gate, waiting) == ["a", "b"]
    gate.give_back(4 * GiB)
    assert start_all(gate, waiting) == ["c"]


def test_smaller_cells_fill_the_gaps() -> None:
    gate = MemoryGate(10 * GiB)
    waiting = [Cell("a", 6 * GiB), Cell("b", 6 * GiB), Cell("s1", 1 * GiB), Cell("s2", 1 * GiB)]
    assert start_all(gate, waiting) == ["a", "s1", "s2"]
    assert [c.name for c in waiting] == ["b"]


def test_a_cell_over_the_budget_builds_alone() -> None:
    gate = MemoryGate(4 * GiB)
    waiting = [Cell("small", 1 * GiB), Cell("huge", 9 * GiB), Cell("tiny", 1 * GiB)]
    assert start_all(gate, waiting) == ["small", "tiny"]
    gate.give_back(1 * GiB)
    assert start_all(gate, waiting) == []  # one still builds: the huge cell waits
    gate.give_back(1 * GiB)
    assert start_all(gate, waiting) == ["huge"]
    assert not gate.fits(1)  # nothing beside it


def test_a_cell_marked_alone_goes_first_and_alone() -> None:
    gate = MemoryGate(None)  # no budget: only `alone` holds cells back
    gate.take(1 * GiB)
    waiting = [Cell("retry", 1 * GiB, alone=True), Cell("other", 1 * GiB)]
    assert start_all(gate, waiting) == []  # nothing passes it while another builds
    gate.give_back(1 * GiB)
    assert start_all(gate, waiting) == ["retry"]
    gate.give_back(1 * GiB)
    assert start_all(gate, waiting) == ["other"]


@pytest.mark.parametrize("budget", [None, 10 * GiB])
def test_unknown_needs_never_hold_a_cell_back(budget: int | None) -> None:
    gate = MemoryGate(budget)
    assert start_all(gate, [Cell(str(i), 0) for i in range(5)], slots=5) == list("01234")
