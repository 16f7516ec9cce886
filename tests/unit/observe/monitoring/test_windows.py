"""Count and time windows, tumbling and sliding."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from servekit.observe.monitoring.config import WindowConfig
from servekit.observe.monitoring.windows import CountWindow, TimeWindow, build_window


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=float).reshape(-1, 1)


def test_a_tumbling_count_window_tests_each_row_once() -> None:
    window = CountWindow(4)
    done = window.add(rows(0, 3), 0.0)
    assert done == []
    done = window.add(rows(3, 6), 0.0)  # rows 3..8: completes 0..3 and 4..7
    assert [w[:, 0].tolist() for w in done] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    done = window.add(rows(9, 3), 0.0)
    assert [w[:, 0].tolist() for w in done] == [[8, 9, 10, 11]]
    assert window.describe()["mode"] == "tumbling"


def test_a_sliding_count_window_overlaps_by_size_minus_step() -> None:
    window = CountWindow(4, step=2)
    done = window.add(rows(0, 8), 0.0)
    assert [w[:, 0].tolist() for w in done] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert window.describe()["mode"] == "sliding"


def test_a_tumbling_time_window_closes_with_the_first_later_row() -> None:
    window = TimeWindow(10.0, min_size=1)
    assert window.add(rows(0, 2), 100.0) == []
    assert window.add(rows(2, 1), 105.0) == []
    done = window.add(rows(3, 1), 110.0)  # [100, 110) is complete
    assert [w[:, 0].tolist() for w in done] == [[0, 1, 2]]
    done = window.add(rows(4, 1), 121.0)  # [110, 120) holds row 3 only
    assert [w[:, 0].tolist() for w in done] == [[3]]


def test_a_sliding_time_window_steps_by_its_step() -> None:
    window = TimeWindow(10.0, step=5.0, min_size=1)
    for i, t in enumerate((100.0, 103.0, 106.0, 108.0)):
        window.add(rows(i, 1), t)
    done = window.add(rows(4, 1), 111.0)  # closes [100, 110)
    assert [w[:, 0].tolist() for w in done] == [[0, 1, 2, 3]]
    done = window.add(rows(5, 1), 115.0)  # closes [105, 115)
    assert [w[:, 0].tolist() for w in done] == [[2, 3, 4]]


def test_small_time_windows_are_not_tested_and_gaps_are_skipped() -> None:
    window = TimeWindow(10.0, min_size=3)
    window.add(rows(0, 1), 100.0)
    assert window.add(rows(1, 1), 500.0) == []  # one row is too few; no empty windows after
    window.add(rows(2, 2), 505.0)
    done = window.add(rows(4, 1), 510.0)
    assert [w[:, 0].tolist() for w in done] == [[1, 2, 3]]


def test_window_config_needs_exactly_one_length() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        WindowConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        WindowConfig(size=10, seconds=5)
    with pytest.raises(ValidationError, match="whole number"):
        WindowConfig(size=10, step=2.5)
    assert isinstance(build_window(WindowConfig(size=10, step=5)), CountWindow)
    assert isinstance(build_window(WindowConfig(seconds=60)), TimeWindow)
    assert WindowConfig(seconds=60, step=10).sliding


@pytest.mark.parametrize(("size", "step"), [(5, 5), (5, 2), (5, 1), (3, 7)])
def test_blocks_of_any_size_give_the_windows_of_one_row_at_a_time(size: int, step: int) -> None:
    """Adding a journal batch at once equals adding its rows one by one."""
    rng = np.random.default_rng(size * 10 + step)
    blocked, single = CountWindow(size, step), CountWindow(size, step)
    start = 0
    for count in rng.integers(0, 12, 30):
        block = rows(start, int(count))
        start += int(count)
        expected = [w for row in block for w in single.add(row.reshape(1, -1), 0.0)]
        got = blocked.add(block, 0.0)
        assert [w[:, 0].tolist() for w in got] == [w[:, 0].tolist() for w in expected]
