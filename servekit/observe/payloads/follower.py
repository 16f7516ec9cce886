"""The journal as the shipper process sees it: segments to read and cursors to commit.

The serving process owns the journal (it appends, rotates, trims and drops); the shipper only
reads the segment files and moves its consumers' cursor files forward, under each file's lock
(``write_cursor_forward``), which the writer also takes when it drops records. The writer learns
the shipper's progress from the same files (``Journal.maintain``), so no other channel is needed
and either process may die and restart without losing its place.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from servekit.observe.payloads.journal import (
    SEGMENT_SUFFIX,
    JournalReader,
    first_offset,
    read_cursor,
    scan_segment,
    segment_name,
    write_cursor_forward,
)

UNKNOWN_END = sys.maxsize
"""A follower does not know where the writer is: readers read until the first incomplete
record instead."""


class SpoolFollower:
    """The reading side of a Journal in another process, for ``SinkWorker`` and
    ``JournalReader`` (the same methods the Journal offers them)."""

    end = UNKNOWN_END
    size = 0
    """Not known here; the serving process reports the spool's size."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segments_dir = directory / "segments"
        self._cursors_dir = directory / "cursors"
        self._lock = threading.Lock()
        self._cursors: dict[str, int] = {}
        self._fds: dict[str, int] = {}

    # -- consumers (the sink threads) ----------------------------------------------------------

    def register(self, name: str) -> int:
        """The cursor the writer recorded for ``name`` (it writes one before starting us)."""
        fd = os.open(self._cursors_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
        with self._lock:
            self._fds[name] = fd
            found = read_cursor(fd)
            segments = self._firsts()
            oldest = segments[0] if segments else 0
            self._cursors[name] = max(found if found is not None else oldest, oldest)
            return self._cursors[name]

    def cursor(self, name: str) -> int:
        """The committed cursor; moved forward when the writer dropped records meanwhile."""
        found = read_cursor(self._fds[name])
        with self._lock:
            if found is not None and found > self._cursors[name]:
                self._cursors[name] = found
            return self._cursors[name]

    def commit(self, name: str, offset: int) -> None:
        with self._lock:
            if offset <= self._cursors[name]:
                return
            self._cursors[name] = offset
            write_cursor_forward(self._fds[name], offset)

    def take_dropped(self, name: str) -> int:
        return 0  # the writer drops, and counts, records

    def reader(self, name: str) -> JournalReader:
        return JournalReader(self, name)

    def visible_end(self) -> int:
        """The offset after the last complete record on disk (a scan of the last segment)."""
        firsts = self._firsts()
        if not firsts:
            return 0
        count, _ = scan_segment(self._segments_dir / segment_name(firsts[-1]))
        return firsts[-1] + count

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # -- what a JournalReader asks of its source ----------------------------------------------

    def _locate(self, offset: int) -> tuple[Path, int] | None:
        """The segment file holding ``offset`` (listed afresh: the writer rotates and trims)."""
        firsts = self._firsts()
        for first, following in zip(firsts, [*firsts[1:], None], strict=True):
            if following is None or offset < following:
                if offset < first:
                    return None
                return self._segments_dir / segment_name(first), first
        return None

    def _note_read(
        self, name: str, next_offset: int, out: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        cursor = self.cursor(name)
        if out and out[0][0] < cursor:  # dropped by the writer while this read them
            out = [record for record in out if record[0] >= cursor]
        return out

    def _rewound(self, name: str, next_offset: int) -> None:
        pass

    def _firsts(self) -> list[int]:
        try:
            names = os.listdir(self._segments_dir)
        except FileNotFoundError:
            return []
        return sorted(first_offset(Path(n)) for n in names if n.endswith(SEGMENT_SUFFIX))
