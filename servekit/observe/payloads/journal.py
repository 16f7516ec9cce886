"""The on-disk spool: an append-only journal of encoded records, read by every sink at its own pace.

Why one journal instead of a queue per sink: every event is written once, before the client's
response leaves, so a slow or dead sink costs disk space, not memory, and a hard kill loses
nothing that was answered (the write reaches the page cache; ``fsync`` is opt-in for power loss).
Each sink keeps a cursor (the next offset it needs) in a small file, committed after each
delivered batch, so after a restart it resumes where it stopped: at least once, in order.

Layout: ``<dir>/segments/<first offset>.seg`` files of framed records
(``u32 length | u32 crc32 | payload``) and ``<dir>/cursors/<sink>``.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("servekit.payloads")

_FRAME = struct.Struct("<II")
_SUFFIX = ".seg"


class JournalFull(Exception):
    """The journal reached its disk limit and its policy is to block."""


@dataclass(slots=True)
class _Segment:
    first: int
    path: Path
    size: int = 0


class Journal:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        on_full: str = "block",
        fsync: bool = False,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.on_full = on_full
        self.fsync = fsync
        self._segments_dir = directory / "segments"
        self._cursors_dir = directory / "cursors"
        self._segments_dir.mkdir(parents=True, exist_ok=True)
        self._cursors_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._cursors: dict[str, int] = {}
        self._read: dict[str, int] = {}
        """Where each consumer's reader is: records before it are in the sink's hands."""
        self.dropped: dict[str, int] = {}
        """Records each consumer lost because the journal was full (policy 'drop')."""
        self.end = 0
        """The offset the next record gets."""
        self._open_segments()

    # -- writing (the event loop's thread) ----------------------------------------------------

    def _open_segments(self) -> None:
        for path in sorted(self._segments_dir.glob("*" + _SUFFIX), key=_first_offset):
            self._segments.append(_Segment(_first_offset(path), path, path.stat().st_size))
        if not self._segments:
            self._segments.append(_Segment(0, self._segments_dir / _name(0)))
            self._fd = os.open(self._segments[0].path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            return
        last = self._segments[-1]
        count, valid = _scan(last.path)
        if valid < last.size:  # a torn tail (power loss): keep the whole records only
            logger.warning("journal %s: dropping a torn record at byte %d", last.path, valid)
            os.truncate(last.path, valid)
            last.size = valid
        self.end = last.first + count
        self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)

    @property
    def size(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def full(self) -> bool:
        return self.on_full == "block" and self.size >= self.max_bytes

    def append(self, payload: bytes, *, force: bool = False) -> int:
        """Write one record; its offset. Raises JournalFull at the limit (policy 'block')
        unless ``force``: a request admitted before the limit was reached is still logged."""
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._segments[-1].size >= self.segment_bytes:
                self._rotate()
            if (
                self.size + len(frame) > self.max_bytes
                and not self._make_room(len(frame))
                and not force
            ):
                raise JournalFull(
                    f"the payload log spool is full ({self.max_bytes} bytes) "
                    "because a sink is not keeping up"
                )
            segment = self._segments[-1]  # _make_room may have rotated
            os.write(self._fd, frame)
            if self.fsync:
                os.fsync(self._fd)
            segment.size += len(frame)
            offset = self.end
            self.end += 1
            return offset

    def _rotate(self) -> _Segment:
        os.close(self._fd)
        segment = _Segment(self.end, self._segments_dir / _name(self.end))
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._segments.append(segment)
        return segment

    def _make_room(self, needed: int) -> bool:
        """Trim delivered segments; with policy 'drop', also the oldest undelivered ones."""
        self._trim_locked()
        while self.size + needed > self.max_bytes:
            if self.on_full != "drop":
                return False
            if len(self._segments) < 2:
                if self._segments[0].size == 0:
                    return False  # one record larger than the whole spool
                self._rotate()  # so that the segment being written can be dropped too
            oldest, following = self._segments[0], self._segments[1]
            for name, cursor in self._cursors.items():
                if cursor < following.first:
                    # records its reader already handed to the sink are not lost
                    read = min(max(self._read.get(name, cursor), cursor), following.first)
                    lost = following.first - read
                    if lost:
                        self.dropped[name] = self.dropped.get(name, 0) + lost
                    self._cursors[name] = following.first
                    self._write_cursor(name, following.first)
                    logger.error(
                        "payload log spool full: sink %r lost %d events (policy 'drop')", name, lost
                    )
            oldest.path.unlink(missing_ok=True)
            self._segments.pop(0)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def take_dropped(self, name: str) -> int:
        """Records ``name`` lost since the last call (policy 'drop')."""
        with self._lock:
            return self.dropped.pop(name, 0)

    # -- consumers (sink threads) -------------------------------------------------------------

    def register(self, name: str) -> int:
        """A consumer's committed cursor; a new consumer starts at the oldest kept record."""
        path = self._cursors_dir / name
        with self._lock:
            try:
                cursor = int(path.read_text())
            except (OSError, ValueError):
                cursor = self._segments[0].first
            cursor = min(max(cursor, self._segments[0].first), self.end)
            self._cursors[name] = cursor
            return cursor

    def unregister(self, name: str) -> None:
        with self._lock:
            self._cursors.pop(name, None)
            self._read.pop(name, None)

    def cursor(self, name: str) -> int:
        return self._cursors[name]

    def commit(self, name: str, offset: int) -> None:
        """``name`` has delivered everything before ``offset``."""
        with self._lock:
            if offset <= self._cursors.get(name, 0):
                return  # records were dropped meanwhile: the cursor already moved past them
            self._cursors[name] = offset
            self._write_cursor(name, offset)
            self._trim_locked()

    def _write_cursor(self, name: str, offset: int) -> None:
        tmp = self._cursors_dir / f".{name}.tmp"
        tmp.write_text(str(offset))
        os.replace(tmp, self._cursors_dir / name)

    def _trim_locked(self) -> None:
        low = min(self._cursors.values(), default=self.end)
        while len(self._segments) > 1 and self._segments[1].first <= low:
            self._segments.pop(0).path.unlink(missing_ok=True)

    def reader(self, name: str) -> JournalReader:
        return JournalReader(self, name)

    def _locate(self, offset: int) -> tuple[Path, int] | None:
        with self._lock:
            for segment, following in zip(self._segments, [*self._segments[1:], None], strict=True):
                if following is None or offset < following.first:
                    return (segment.path, segment.first) if offset >= segment.first else None
        return None


class JournalReader:
    """Sequential reads for one consumer, from its cursor, across segment files."""

    def __init__(self, journal: Journal, name: str) -> None:
        self._journal = journal
        self._name = name
        self._file = None
        self._next = journal.cursor(name)
        self._path: Path | None = None

    def rewind(self) -> None:
        """Read again from the committed cursor (after a failed delivery or a drop)."""
        self._close()
        self._next = self._journal.cursor(self._name)
        self._journal._read[self._name] = self._next

    def read(self, max_records: int) -> list[tuple[int, bytes]]:
        if self._next < self._journal.cursor(self._name):
            self.rewind()  # the journal dropped records under us
        out: list[tuple[int, bytes]] = []
        while len(out) < max_records and self._next < self._journal.end:
            if self._file is None and not self._open():
                break
            start = self._file.tell()
            header = self._file.read(_FRAME.size)
            if len(header) < _FRAME.size:
                located = self._journal._locate(self._next)
                if located is not None and located[0] != self._path:
                    self._close()  # this segment is finished: the next one holds self._next
                    continue
                self._file.seek(start)  # the writer has not finished this record yet
                break
            length, crc = _FRAME.unpack(header)
            payload = self._file.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                self._file.seek(start)  # a record still being written: read it next time
                break
            out.append((self._next, payload))
            self._next += 1
        journal = self._journal
        with journal._lock:  # atomic with respect to a drop
            cursor = journal._cursors[self._name]
            if out and out[0][0] < cursor:  # dropped (and counted) while this call read them
                out = [record for record in out if record[0] >= cursor]
            journal._read[self._name] = self._next
        return out

    def _open(self) -> bool:
        located = self._journal._locate(self._next)
        if located is None:
            return False
        path, first = located
        self._file = open(path, "rb")  # noqa: SIM115 - kept open across reads
        self._path = path
        for _ in range(self._next - first):  # skip to the cursor (once per segment)
            header = self._file.read(_FRAME.size)
            if len(header) < _FRAME.size:
                self._close()
                return False
            self._file.seek(_FRAME.unpack(header)[0], os.SEEK_CUR)
        return True

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close()


def _name(first: int) -> str:
    return f"{first:020d}{_SUFFIX}"


def _first_offset(path: Path) -> int:
    return int(path.name[: -len(_SUFFIX)])


def _scan(path: Path) -> tuple[int, int]:
    """(whole records, bytes they span) from the start of a segment file."""
    count = valid = 0
    with open(path, "rb") as handle:
        while True:
            header = handle.read(_FRAME.size)
            if len(header) < _FRAME.size:
                return count, valid
            length, crc = _FRAME.unpack(header)
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return count, valid
            count += 1
            valid += _FRAME.size + length
