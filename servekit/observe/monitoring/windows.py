"""Windows of live rows for window detectors: by count or by time, tumbling or sliding.

A window is tested when it is complete: a count window after ``step`` new rows once it holds
``size``; a time window when a row arrives at or after its end (request time, so replaying
the journal after a restart gives the same windows).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import numpy as np

from servekit.observe.monitoring.config import WindowConfig


class Window(Protocol):
    def add(self, rows: np.ndarray, time: float) -> list[np.ndarray]:
        """Add ``rows`` (one request's, shape (m, d)) seen at ``time``; the windows completed."""

    def describe(self) -> dict[str, float | int | str]: ...


class CountWindow:
    """The last ``size`` rows, tested every ``step`` rows (tumbling when step == size).

    Rows arrive in blocks (a journal batch at a time) and are kept in one array, so adding a
    block costs one concatenation, not a Python step per row.
    """

    def __init__(self, size: int, step: int | None = None) -> None:
        self.size = size
        self.step = step or size
        self._rows: np.ndarray | None = None
        self._since = 0
        """Rows added since the last window was completed."""

    def add(self, rows: np.ndarray, time: float = 0.0) -> list[np.ndarray]:
        if len(rows) == 0:
            return []
        kept = self._rows
        buffer = rows if kept is None else np.concatenate([kept, rows])
        older, since = len(buffer) - len(rows), self._since
        done = []
        # The j-th new row (1-based) ends a window when the buffer holds ``size`` rows up to it
        # and ``step`` rows came since the last window ended.
        end = max(self.size - older, self.step - since)
        while end <= len(rows):
            stop = older + end
            done.append(buffer[stop - self.size : stop])
            since = -end  # rows after this end count from here
            end += self.step
        self._since = since + len(rows)
        self._rows = buffer[-self.size :].copy()
        return done

    def describe(self) -> dict[str, float | int | str]:
        mode = "tumbling" if self.step == self.size else "sliding"
        filled = 0 if self._rows is None else len(self._rows)
        return {"size": self.size, "step": self.step, "mode": mode, "filled": filled}


class TimeWindow:
    """Rows of the last ``seconds``, tested every ``step`` seconds (tumbling when equal).

    Windows are aligned to multiples of ``step`` since the epoch, so every server (and a
    replay) cuts them at the same instants.
    """

    def __init__(self, seconds: float, step: float | None = None, min_size: int = 10) -> None:
        self.seconds = seconds
        self.step = step or seconds
        self.min_size = min_size
        self._rows: deque[tuple[float, np.ndarray]] = deque()
        self._end: float | None = None

    def add(self, rows: np.ndarray, time: float) -> list[np.ndarray]:
        if self._end is None:
            self._end = (math.floor(time / self.step) + 1) * self.step
        done = []
        while time >= self._end:
            window = [row for t, row in self._rows if self._end - self.seconds <= t < self._end]
            if len(window) >= self.min_size:
                done.append(np.stack(window))
            self._end += self.step
            while self._rows and self._rows[0][0] < self._end - self.seconds:
                self._rows.popleft()
            if not self._rows:  # a long gap: jump to the window holding ``time``
                self._end = max(self._end, (math.floor(time / self.step) + 1) * self.step)
        for row in rows:
            self._rows.append((time, row))
        return done

    def describe(self) -> dict[str, float | int | str]:
        mode = "tumbling" if self.step == self.seconds else "sliding"
        return {"seconds": self.seconds, "step": self.step, "mode": mode, "filled": len(self._rows)}


def build_window(config: WindowConfig) -> Window:
    if config.size is not None:
        return CountWindow(config.size, int(config.step) if config.step else None)
    assert config.seconds is not None
    return TimeWindow(config.seconds, config.step, config.min_size)


__all__ = ["CountWindow", "TimeWindow", "Window", "build_window"]
