"""The on-disk spool: an append-only journal of encoded records, read by every sink at its own pace.

Why one journal instead of a queue per sink: every event is written once, before the client's
response leaves, so a slow or dead sink costs disk space, not memory, and a hard kill loses
nothing that was answered. Segments are preallocated and memory-mapped: appending is a copy into
the page cache, without a system call (``fsync`` is opt-in, for power loss).
Each sink keeps a cursor (the next offset it needs) in a small file, committed after each
delivered batch, so after a restart it resumes where it stopped: at least once, in order.

Layout: ``<dir>/segments/<first offset>.seg`` files of framed records
(``u32 length | u32 checksum | payload``, then zeros up to the preallocated size) and
``<dir>/cursors/<sink>``. A record's header is written after its payload, so a reader that
finds a zero length or a bad checksum knows the record is not complete yet. The checksum is
Adler-32: it needs no lookup tables, which a CRC's are, and those tables are evicted from the
CPU's caches between two inferences (zlib's CRC-32 cost about 0.3 µs more per record in a
server; Adler-32 is weaker against bit errors, which a torn write is not). Spools written with
CRC-32 before 2026-12-05 are still read.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from servekit.observe.payloads.prefault import PAGE, address_of, populate_write

logger = logging.getLogger("servekit.payloads")

_FRAME = struct.Struct("<II")
PREFAULT_AHEAD_BYTES = 2 * 1024 * 1024
"""How far ahead of the writer the spool's pages are populated: about a second of records at
thousands of inferences a second, and populated pages left that long are not likely to be
written back (and write-protected) by the kernel before the writer reaches them."""
PREFAULT_MIN_BYTES = 64 * 1024
PREFAULT_POLL_SECONDS = 0.05
SEGMENT_SUFFIX = ".seg"


class JournalFull(Exception):
    """The journal reached its disk limit and its policy is to block."""


@dataclass(slots=True)
class _Segment:
    first: int
    path: Path
    size: int = 0
    """Bytes of whole records (the file itself is preallocated to its capacity)."""


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
        self._written = 0
        """Bytes of records appended (by the writer only, so its fast path needs no lock)."""
        self._trimmed = 0
        """Bytes of segments trimmed or dropped (under the lock): the size is the difference."""
        self._cursor_fds: dict[str, int] = {}
        self._external: set[str] = set()
        """Consumers in another process (the shipper): their cursors are read from their files."""
        self._map: mmap.mmap
        self._view: memoryview
        """The writable view of the current segment (slice assignment costs half the mmap's)."""
        self._capacity = 0
        self._position = 0
        """Where the next record goes in the current segment (its ``size``)."""
        self._open_segments()

    # -- writing (the event loop's thread) ----------------------------------------------------

    def _open_segments(self) -> None:
        for path in sorted(self._segments_dir.glob("*" + SEGMENT_SUFFIX), key=first_offset):
            self._segments.append(_Segment(first_offset(path), path))
        if not self._segments:
            self._segments.append(_Segment(0, self._segments_dir / segment_name(0)))
            self._map_for_writing(self._segments[0], self.segment_bytes)
            return
        for segment in self._segments:
            count, segment.size = scan_segment(segment.path)
        last = self._segments[-1]
        self.end = last.first + count
        self._map_for_writing(last, max(self.segment_bytes, last.path.stat().st_size))
        self._view[last.size :] = bytes(self._capacity - last.size)  # a torn tail: zero it
        self._written = sum(s.size for s in self._segments)

    def _map_for_writing(self, segment: _Segment, capacity: int) -> None:
        fd = os.open(segment.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < capacity:
                try:  # real blocks now: a full disk is an error here, not a SIGBUS later
                    os.posix_fallocate(fd, 0, capacity)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise JournalFull(f"cannot allocate spool space: {exc}") from None
                    os.ftruncate(fd, capacity)
            self._map = mmap.mmap(fd, capacity)
        finally:
            os.close(fd)
        self._map_address = address_of(self._map)
        self._populated = 0
        self._view = memoryview(self._map)
        self._capacity = capacity
        self._position = segment.size

    def prefault(self) -> bool:
        """Populate the pages the writer reaches next (``PREFAULT_AHEAD_BYTES`` past it), from
        a thread other than the writer's (``Prefaulter``); False when the kernel cannot.
        Under the lock, so the mapping stays while the kernel works: only the slow path of
        ``append`` (a new segment) may wait for it."""
        with self._lock:
            if self._map.closed:
                return True
            start = max(self._populated, self._position) // PAGE * PAGE
            stop = min(self._position + PREFAULT_AHEAD_BYTES, self._capacity)
            if stop - start < PREFAULT_MIN_BYTES and stop < self._capacity:
                return True
            self._populated = stop
            return populate_write(self._map_address + start, stop - start)

    def _unmap(self) -> None:
        self._view.release()
        self._map.close()

    @property
    def size(self) -> int:
        return self._written - self._trimmed

    @property
    def full(self) -> bool:
        return self.on_full == "block" and self._written - self._trimmed >= self.max_bytes

    def append(self, payload: bytes, *, force: bool = False) -> int:
        """Write one record; its offset. Raises JournalFull at the limit (policy 'block')
        unless ``force``: a request admitted before the limit was reached is still logged.

        One writer thread (the event loop's): the common case takes no lock, since only the
        writer moves ``_position``, ``_written`` and ``end``, and consumers only ever trim
        whole segments before the current one (under the lock, as the slow path does)."""
        length = len(payload)
        position = self._position
        start = position + _FRAME.size
        stop = start + length
        if (
            not length
            or stop > self._capacity
            or self._written - self._trimmed + stop - position > self.max_bytes
        ):
            with self._lock:
                position = self._make_space(length, force)
            start = position + _FRAME.size
            stop = start + length
        # The payload, then its header: a reader (in another thread or process, or after a
        # crash) that finds a zero length has not got a whole record yet; checksum checked too.
        view = self._view
        view[start:stop] = payload
        _FRAME.pack_into(view, position, length, zlib.adler32(payload))
        if self.fsync:
            self._map.flush()
        self._position = stop
        self._written += stop - position
        offset = self.end
        self.end = offset + 1
        return offset

    def _make_space(self, length: int, force: bool) -> int:
        """The slow path of ``append`` (a new segment, or the size limit): where to write."""
        if not length:
            raise ValueError("a journal record cannot be empty (a zero length marks the end)")
        needed = _FRAME.size + length
        current = self._segments[-1]
        current.size = self._position
        if current.size + needed > self._capacity:
            if current.size:
                self._rotate(needed)
            else:  # an empty segment: grow it rather than start one at the same offset
                self._unmap()
                self._map_for_writing(current, max(self.segment_bytes, needed))
        if self.size + needed > self.max_bytes and not self._make_room(needed) and not force:
            raise JournalFull(
                f"the payload log spool is full ({self.max_bytes} bytes) "
                "because a sink is not keeping up"
            )
        return self._position  # _make_room may have rotated

    def _rotate(self, needed: int = 0) -> _Segment:
        self._segments[-1].size = self._position
        segment = _Segment(self.end, self._segments_dir / segment_name(self.end))
        self._unmap()
        self._map_for_writing(segment, max(self.segment_bytes, needed))
        self._segments.append(segment)
        return segment

    def _make_room(self, needed: int) -> bool:
        """Trim delivered segments; with policy 'drop', also the oldest undelivered ones."""
        self._refresh_external_locked()
        for path in self._trim_locked():
            path.unlink(missing_ok=True)  # the space must be free before writing on
        while self.size + needed > self.max_bytes:
            if self.on_full != "drop":
                return False
            if len(self._segments) < 2:
                if self._position == 0:
                    return False  # one record larger than the whole spool
                self._rotate(needed)  # so that the segment being written can be dropped too
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
            self._trimmed += self._segments.pop(0).size
        return True

    def close(self) -> None:
        with self._lock:
            if not self._map.closed:
                self._unmap()
            for fd in self._cursor_fds.values():
                os.close(fd)
            self._cursor_fds.clear()

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

    def add_external(self, name: str) -> int:
        """A consumer that runs in another process and commits to its cursor file itself
        (``SpoolFollower``): this journal reads the file to trim and to count drops."""
        cursor = self.register(name)
        with self._lock:
            self._external.add(name)
            self._write_cursor(name, cursor)  # so the other process starts where this one says
        return cursor

    def maintain(self) -> None:
        """Catch up with the external consumers' cursor files and remove the segments every
        consumer is past (external consumers cannot trim: only the writer knows the
        segments in use). Called periodically; cheap when nothing moved."""
        if not self._external:
            return
        with self._lock:
            self._refresh_external_locked()
            trimmed = self._trim_locked()
        for path in trimmed:
            path.unlink(missing_ok=True)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._cursors.pop(name, None)
            self._read.pop(name, None)

    def cursor(self, name: str) -> int:
        return self._cursors[name]

    def _refresh_external_locked(self) -> None:
        for name in self._external:
            found = read_cursor(self._cursor_fd(name))
            if found is not None and found > self._cursors[name]:
                self._cursors[name] = min(found, self.end)

    def committed(self, name: str) -> int:
        """Where ``name`` has delivered up to (the end when no such consumer is registered)."""
        if name in self._external:
            found = read_cursor(self._cursor_fd(name))
            return max(found or 0, self._cursors[name])
        return self._cursors.get(name, self.end)

    def commit(self, name: str, offset: int) -> None:
        """``name`` has delivered everything before ``offset``."""
        with self._lock:
            if offset <= self._cursors.get(name, 0):
                return  # records were dropped meanwhile: the cursor already moved past them
            self._cursors[name] = offset
            self._write_cursor(name, offset)
            trimmed = self._trim_locked()
        # Outside the lock: removing a written 16 MiB segment took 3-17 ms here, and append()
        # waits for this lock on the event loop's thread.
        for path in trimmed:
            path.unlink(missing_ok=True)

    def _cursor_fd(self, name: str) -> int:
        fd = self._cursor_fds.get(name)
        if fd is None:
            path = self._cursors_dir / name
            fd = self._cursor_fds[name] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    def _write_cursor(self, name: str, offset: int) -> None:
        """One fixed-width write in place: a single small write cannot be torn by a crash.
        An external consumer's file is written under its lock, never backwards."""
        fd = self._cursor_fd(name)
        if name in self._external:
            write_cursor_forward(fd, offset)
        else:
            os.pwrite(fd, b"%020d" % offset, 0)

    # -- what a JournalReader asks of its source ----------------------------------------------

    def _note_read(
        self, name: str, next_offset: int, out: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]:
        """Record how far ``name`` has read; ``out`` without what was dropped meanwhile."""
        with self._lock:  # atomic with respect to a drop
            cursor = self._cursors[name]
            if out and out[0][0] < cursor:  # dropped (and counted) while the reader read them
                out = [record for record in out if record[0] >= cursor]
            self._read[name] = next_offset
        return out

    def _rewound(self, name: str, next_offset: int) -> None:
        self._read[name] = next_offset

    def _trim_locked(self) -> list[Path]:
        """Forget the segments every consumer is past; their files, for the caller to remove
        (a file left by a crash before that is trimmed again after the restart)."""
        low = min(self._cursors.values(), default=self.end)
        trimmed = []
        while len(self._segments) > 1 and self._segments[1].first <= low:
            segment = self._segments.pop(0)
            self._trimmed += segment.size
            trimmed.append(segment.path)
        return trimmed

    def reader(self, name: str) -> JournalReader:
        return JournalReader(self, name)

    def records(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """The records from ``start`` to ``stop`` (a lookup, not a consumer: nothing is
        committed; it ends early where segments were trimmed meanwhile)."""
        offset = start
        while offset < stop:
            located = self._locate(offset)
            if located is None:
                return
            path, number = located
            try:
                with open(path, "rb") as handle:
                    view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                return
            with view:
                position = 0
                while number < stop and (record := _record_at(view, position)) is not None:
                    if number >= offset:
                        yield number, record
                    position += _FRAME.size + len(record)
                    number += 1
            if number <= offset:
                return  # nothing more written yet
            offset = number

    def _locate(self, offset: int) -> tuple[Path, int] | None:
        with self._lock:
            for segment, following in zip(self._segments, [*self._segments[1:], None], strict=True):
                if following is None or offset < following.first:
                    return (segment.path, segment.first) if offset >= segment.first else None
        return None


class JournalReader:
    """Sequential reads for one consumer, from its cursor, across memory-mapped segments."""

    def __init__(self, journal: Journal | SpoolSource, name: str) -> None:
        self._journal = journal
        self._name = name
        self._map: mmap.mmap | None = None
        self._position = 0
        self._next = journal.cursor(name)
        self._path: Path | None = None

    def rewind(self) -> None:
        """Read again from the committed cursor (after a failed delivery or a drop)."""
        self._close()
        self._next = self._journal.cursor(self._name)
        self._journal._rewound(self._name, self._next)

    def read(self, max_records: int, max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """The next records (at most ``max_records``; once ``max_bytes`` is reached no more,
        but always one when there is one)."""
        if self._next < self._journal.cursor(self._name):
            self.rewind()  # the journal dropped records under us
        out: list[tuple[int, bytes]] = []
        budget = max_bytes if max_bytes is not None else -1
        while len(out) < max_records and self._next < self._journal.end and budget != 0:
            if self._map is None and not self._open():
                break
            record = _record_at(self._map, self._position)  # type: ignore[arg-type]
            if record is None:  # end of this segment, or a record still being written
                located = self._journal._locate(self._next)
                if located is not None and located[0] != self._path:
                    self._close()  # the next segment holds self._next
                    continue
                break
            out.append((self._next, record))
            if budget > 0:
                budget = max(budget - len(record), 0)
            self._position += _FRAME.size + len(record)
            self._next += 1
        return self._journal._note_read(self._name, self._next, out)

    def _open(self) -> bool:
        located = self._journal._locate(self._next)
        if located is None:
            return False
        path, first = located
        try:
            with open(path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # trimmed or dropped meanwhile
            return False
        self._path = path
        self._position = 0
        for _ in range(self._next - first):  # skip to the cursor (once per segment)
            length = _FRAME.unpack_from(self._map, self._position)[0]
            self._position += _FRAME.size + length
        return True

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def close(self) -> None:
        self._close()


class Prefaulter(threading.Thread):
    """Keeps the journal's next pages populated (``Journal.prefault``) until stopped; gives up
    quietly where the kernel cannot, leaving the writer to take its page faults."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(name="servekit-spool-prefault", daemon=True)
        self._journal = journal
        self._stop_requested = threading.Event()

    def run(self) -> None:
        while not self._stop_requested.is_set():
            if not self._journal.prefault():
                logger.info("payload log: the kernel cannot populate the spool's pages ahead")
                return
            self._stop_requested.wait(PREFAULT_POLL_SECONDS)

    def stop(self) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout=5)


def _record_at(view: mmap.mmap, position: int) -> bytes | None:
    """The complete record at ``position``, or None (zeros, a torn or unfinished record)."""
    if position + _FRAME.size > len(view):
        return None
    length, checksum = _FRAME.unpack_from(view, position)
    start = position + _FRAME.size
    if length == 0 or start + length > len(view):
        return None
    payload = view[start : start + length]
    if zlib.adler32(payload) == checksum or zlib.crc32(payload) == checksum:  # CRC: old spools
        return payload
    return None


class SpoolSource(Protocol):
    """What a JournalReader reads through: the Journal itself, or a SpoolFollower in
    another process."""

    end: int

    def cursor(self, name: str) -> int: ...
    def _locate(self, offset: int) -> tuple[Path, int] | None: ...
    def _note_read(
        self, name: str, next_offset: int, out: list[tuple[int, bytes]]
    ) -> list[tuple[int, bytes]]: ...
    def _rewound(self, name: str, next_offset: int) -> None: ...


def read_cursor(fd: int) -> int | None:
    """The offset a cursor file holds (None when empty or unreadable)."""
    try:
        return int(os.pread(fd, 20, 0))
    except (OSError, ValueError):
        return None


def write_cursor_forward(fd: int, offset: int) -> None:
    """Write ``offset`` unless the file already holds a later one, under the file's lock: two
    processes move an external consumer's cursor (the consumer as it delivers, the writer
    when it drops records), and it must never go back."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        found = read_cursor(fd)
        if found is None or offset > found:
            os.pwrite(fd, b"%020d" % offset, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def segment_name(first: int) -> str:
    return f"{first:020d}{SEGMENT_SUFFIX}"


def first_offset(path: Path) -> int:
    return int(path.name[: -len(SEGMENT_SUFFIX)])


def scan_segment(path: Path) -> tuple[int, int]:
    """(whole records, bytes they span) from the start of a segment file."""
    count = valid = 0
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return 0, 0
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            while (record := _record_at(view, valid)) is not None:
                count += 1
                valid += _FRAME.size + len(record)
    return count, valid
