"""The payload spool: framed records in preallocated, memory-mapped segment files, per-consumer
cursors, trimming, the 'block' and 'drop' policies, recovery of a torn tail, and a reader racing
the writer."""

from __future__ import annotations

import resource
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from servekit.observe.payloads.journal import Journal, JournalFull, JournalReader

FRAME = 8  # u32 length | u32 Adler-32 checksum
RECORD = FRAME + 13  # the frame of payload(n)


def payload(n: int, width: int = 13) -> bytes:
    """A distinct payload of exactly ``width`` bytes (``width`` >= 7)."""
    return f"r{n:0{width - 1}d}".encode()


def frame(data: bytes) -> bytes:
    return struct.pack("<II", len(data), zlib.adler32(data)) + data


def segment_firsts(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in (directory / "segments").glob("*.seg"))


def segment_path(directory: Path, first: int) -> Path:
    return directory / "segments" / f"{first:020d}.seg"


def assert_segment(path: Path, records: list[bytes], capacity: int) -> None:
    """``path`` keeps its preallocated ``capacity``: exactly ``records``, framed, then zeros."""
    raw = path.read_bytes()
    used = b"".join(frame(r) for r in records)
    assert len(raw) == capacity
    assert raw[: len(used)] == used
    assert raw[len(used) :] == bytes(capacity - len(used))


def read_all(reader: JournalReader, batch: int = 1000) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while chunk := reader.read(batch):
        out.extend(chunk)
    return out


class Journals:
    """The journals a test opens, closed at the end of the test with their readers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.open: list[Journal] = []
        self.readers: list[JournalReader] = []

    def __call__(self, directory: Path | None = None, **options: object) -> Journal:
        options.setdefault("max_bytes", 1 << 30)
        journal = Journal(directory or self.directory, **options)  # type: ignore[arg-type]
        self.open.append(journal)
        return journal

    def close(self, journal: Journal) -> None:
        self.open.remove(journal)
        journal.close()

    def reader(self, journal: Journal, name: str) -> JournalReader:
        """A reader closed at the end of the test even if an assertion fails first."""
        reader = journal.reader(name)
        self.readers.append(reader)
        return reader


@pytest.fixture
def open_journal(tmp_path: Path) -> Iterator[Journals]:
    """Opens journals (in tmp_path/spool unless told) and closes them and their readers."""
    manager = Journals(tmp_path / "spool")
    yield manager
    for reader in manager.readers:
        reader.close()  # idempotent
    for journal in list(manager.open):
        manager.close(journal)


def test_offsets_size_and_frames(open_journal, tmp_path: Path) -> None:
    journal = open_journal(segment_bytes=4096, fsync=True)
    assert journal.segment_bytes == 4096
    assert journal.end == 0 and journal.size == 0
    (segment,) = (tmp_path / "spool" / "segments").glob("*.seg")
    assert segment.name == "00000000000000000000.seg"
    assert_segment(segment, [], 4096)  # preallocated from the start, all zeros

    assert [journal.append(payload(i)) for i in range(5)] == [0, 1, 2, 3, 4]
    assert journal.append(b"x") == 5  # a one-byte record
    assert journal.end == 6
    assert journal.size == 5 * RECORD + FRAME + 1  # whole records, not the file's size
    assert_segment(segment, [*(payload(i) for i in range(5)), b"x"], 4096)
    raw = segment.read_bytes()
    length, checksum = struct.unpack_from("<II", raw, 0)
    assert length == 13 and checksum == zlib.adler32(payload(0))
    assert raw[FRAME : FRAME + 13] == payload(0)

    journal.register("a")
    reader = open_journal.reader(journal, "a")
    assert reader.read(2) == [(0, payload(0)), (1, payload(1))]
    # a byte budget stops the batch once reached, but never before the first record
    assert reader.read(100, max_bytes=14) == [(2, payload(2)), (3, payload(3))]
    assert reader.read(100, max_bytes=1) == [(4, payload(4))]
    assert reader.read(100) == [(5, b"x")]
    assert reader.read(100) == []
    reader.close()


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(
    open_journal, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=4096)
    big = bytes(range(256)) * 20  # 5120 bytes
    journal.register("a")
    assert journal.append(payload(0)) == 0
    assert journal.append(big) == 1  # does not fit: a new segment, preallocated to its frame
    assert journal.append(payload(2)) == 2  # nothing fits after it: a new segment again
    assert segment_firsts(directory) == [0, 1, 2]
    assert_segment(segment_path(directory, 0), [payload(0)], 4096)
    assert_segment(segment_path(directory, 1), [big], FRAME + len(big))
    assert_segment(segment_path(directory, 2), [payload(2)], 4096)
    size = 2 * RECORD + FRAME + len(big)
    assert journal.size == size
    expected = [(0, payload(0)), (1, big), (2, payload(2))]
    assert read_all(open_journal.reader(journal, "a"), batch=1) == expected

    open_journal.close(journal)
    reopened = open_journal(segment_bytes=4096)
    assert (reopened.end, reopened.size) == (3, size)
    assert reopened.register("a") == 0
    assert read_all(open_journal.reader(reopened, "a")) == expected
    assert_segment(segment_path(directory, 1), [big], FRAME + len(big))


@pytest.mark.parametrize(
    ("segment_bytes", "per_segment"),
    [(63, 3), (64, 3), (83, 3), (84, 4)],
    ids=["exactly-3", "3-and-1-byte", "4-minus-1-byte", "exactly-4"],
)
def test_reads_across_many_small_segments(
    open_journal, tmp_path: Path, segment_bytes: int, per_segment: int
) -> None:
    """A segment rotates when the next frame does not fit: a segment never outgrows its
    preallocated size, and the bytes it cannot use stay zero."""
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=segment_bytes)
    assert journal.segment_bytes == segment_bytes
    journal.register("a")
    for i in range(200):
        assert journal.append(payload(i)) == i
    firsts = segment_firsts(directory)
    assert firsts == list(range(0, 200, per_segment))
    assert journal.size == 200 * RECORD
    for first in firsts:
        records = [payload(i) for i in range(first, min(first + per_segment, 200))]
        assert_segment(segment_path(directory, first), records, segment_bytes)

    reader = open_journal.reader(journal, "a")
    got = []
    while chunk := reader.read(7):
        assert len(chunk) <= 7
        got.extend(chunk)
    assert got == [(i, payload(i)) for i in range(200)]

    # A reader opening mid-segment skips to its cursor, then goes on into the next segments.
    middle = firsts[len(firsts) // 2] + 1
    journal.commit("a", middle)
    assert segment_firsts(directory)[0] == middle - 1  # the segments behind it were trimmed
    assert journal.size == (200 - middle + 1) * RECORD
    second = open_journal.reader(journal, "a")
    count = 2 * per_segment + 1
    assert second.read(count) == [(i, payload(i)) for i in range(middle, middle + count)]
    reader.close()
    second.close()


def test_cursor_and_end_survive_a_reopen(open_journal, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=100)  # 4 records of 21 bytes per segment
    assert journal.register("a") == 0
    assert journal.register("b") == 0
    for i in range(50):
        journal.append(payload(i))
    reader = open_journal.reader(journal, "a")
    assert [o for o, _ in reader.read(30)] == list(range(30))
    journal.commit("a", 30)
    journal.commit("b", 12)
    reader.close()
    assert segment_firsts(directory)[0] == 12
    size = journal.size
    assert size == (50 - 12) * RECORD
    open_journal.close(journal)
    journal.close()  # closing twice is harmless
    # A cursor is a fixed-width decimal number, rewritten in place.
    assert (directory / "cursors" / "a").read_bytes() == b"00000000000000000030"
    assert (directory / "cursors" / "b").read_bytes() == b"00000000000000000012"
    assert_segment(segment_path(directory, 48), [payload(48), payload(49)], 100)

    reopened = open_journal(segment_bytes=100)
    assert reopened.end == 50
    assert reopened.size == size  # the whole records, found again by scanning the segments
    assert_segment(segment_path(directory, 48), [payload(48), payload(49)], 100)  # untouched
    assert reopened.register("a") == 30
    assert reopened.register("b") == 12
    assert reopened.register("new") == 12  # the oldest kept record
    resumed = open_journal.reader(reopened, "a")
    assert read_all(resumed) == [(i, payload(i)) for i in range(30, 50)]
    assert reopened.append(payload(50)) == 50  # offsets continue after the reopen
    assert reopened.size == size + RECORD
    assert_segment(segment_path(directory, 48), [payload(48), payload(49), payload(50)], 100)
    assert resumed.read(10) == [(50, payload(50))]
    other = open_journal.reader(reopened, "b")
    assert [o for o, _ in read_all(other)] == list(range(12, 51))
    reopened.commit("b", 51)
    assert (directory / "cursors" / "b").read_bytes() == b"00000000000000000051"
    assert int((directory / "cursors" / "a").read_text()) == 30
    resumed.close()
    other.close()


def test_a_cursor_file_beyond_the_end_is_clamped(open_journal, tmp_path: Path) -> None:
    cursors = tmp_path / "spool" / "cursors"
    journal = open_journal()
    for i in range(5):
        journal.append(payload(i))
    (cursors / "ahead").write_text("999")
    (cursors / "garbled").write_text("not a number")
    assert journal.register("ahead") == 5
    assert journal.register("garbled") == 0

    # Any decimal text is a cursor (e.g. one written by an older version); the next commit
    # overwrites it in place with the fixed-width form.
    (cursors / "short").write_text("3")
    assert journal.register("short") == 3
    journal.commit("short", 4)
    assert (cursors / "short").read_bytes() == b"00000000000000000004"
    journal.commit("garbled", 2)
    assert (cursors / "garbled").read_bytes() == b"00000000000000000002"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x07\x00\x00",  # part of a header
        struct.pack("<II", 100, 0) + b"only a few bytes",  # a length past the segment's end
        struct.pack("<II", 30, zlib.adler32(b"x" * 30)) + b"x" * 12,  # part of its payload
        struct.pack("<II", 5, zlib.adler32(b"hello") ^ 1) + b"hello",  # whole, but a bad sum
    ],
    ids=["partial-header", "past-the-end", "partial-payload", "bad-checksum"],
)
def test_a_torn_tail_is_ignored_and_overwritten_on_reopen(
    open_journal, tmp_path: Path, garbage: bytes
) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=64)  # 3 records per segment
    for i in range(10):
        journal.append(payload(i))
    size = journal.size
    open_journal.close(journal)
    assert segment_firsts(directory) == [0, 3, 6, 9]
    last = segment_path(directory, 9)
    with open(last, "r+b") as handle:
        handle.seek(RECORD)  # just after record 9, in the zeros
        handle.write(garbage)

    reopened = open_journal(segment_bytes=64)
    assert reopened.end == 10
    assert reopened.size == size
    assert_segment(last, [payload(9)], 64)  # the torn record is zeroed; the file keeps its size
    assert reopened.append(payload(10)) == 10
    assert reopened.append(payload(11)) == 11  # fills the segment where the torn record was
    assert_segment(last, [payload(9), payload(10), payload(11)], 64)
    assert reopened.size == size + 2 * RECORD
    reopened.register("a")
    reader = open_journal.reader(reopened, "a")
    assert read_all(reader, batch=3) == [(i, payload(i)) for i in range(12)]
    reader.close()

    # And the file is consistent for the next reopen too.
    open_journal.close(reopened)
    again = open_journal(segment_bytes=64)
    assert again.end == 12
    assert again.size == 12 * RECORD
    assert again.append(payload(12)) == 12
    assert segment_firsts(directory) == [0, 3, 6, 9, 12]


def test_a_record_after_the_zeros_is_never_read(open_journal, tmp_path: Path) -> None:
    """The first zero length ends a segment: a whole, valid frame further on in the zero area
    (stray bytes) is not a record, neither while the journal is open nor after a reopen, which
    zeroes it."""
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=4096)
    journal.register("a")
    for i in range(3):
        journal.append(payload(i))
    path = segment_path(directory, 0)
    with open(path, "r+b") as handle:
        handle.seek(3 * RECORD + 100)
        handle.write(frame(payload(99)))
    reader = open_journal.reader(journal, "a")
    assert read_all(reader) == [(i, payload(i)) for i in range(3)]
    assert reader.read(10) == []
    reader.close()
    open_journal.close(journal)

    reopened = open_journal(segment_bytes=4096)
    assert (reopened.end, reopened.size) == (3, 3 * RECORD)
    assert reopened.register("a") == 0
    assert_segment(path, [payload(i) for i in range(3)], 4096)
    for i in range(3, 40):  # over where the stray frame was
        assert reopened.append(payload(i)) == i
    assert_segment(path, [payload(i) for i in range(40)], 4096)
    assert read_all(open_journal.reader(reopened, "a"), batch=7) == [
        (i, payload(i)) for i in range(40)
    ]


def test_trim_waits_for_every_consumer(open_journal, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=64)  # 3 records per segment
    journal.register("a")
    journal.register("b")
    for i in range(40):
        journal.append(payload(i))
    all_firsts = list(range(0, 40, 3))
    assert segment_firsts(directory) == all_firsts
    assert journal.size == 40 * RECORD

    journal.commit("a", 40)  # 'a' is done, 'b' has read nothing: nothing may go
    assert segment_firsts(directory) == all_firsts
    assert journal.size == 40 * RECORD

    journal.commit("b", 10)  # [0,3), [3,6) and [6,9) are behind both; [9,12) holds 10
    assert segment_firsts(directory) == list(range(9, 40, 3))
    assert journal.size == (40 - 9) * RECORD
    reader = open_journal.reader(journal, "b")
    assert reader.read(3) == [(10, payload(10)), (11, payload(11)), (12, payload(12))]
    reader.close()

    journal.commit("b", 40)  # everything delivered: only the segment being written stays
    assert segment_firsts(directory) == [39]
    assert journal.size == RECORD
    journal.commit("b", 20)  # a cursor never moves back
    assert journal.cursor("b") == 40
    assert (directory / "cursors" / "b").read_bytes() == b"00000000000000000040"

    # A consumer that unregisters no longer holds segments back.
    journal.register("c")  # a new consumer starts at the oldest kept record
    assert journal.cursor("c") == 39
    for i in range(40, 48):
        journal.append(payload(i))
    assert_segment(segment_path(directory, 39), [payload(i) for i in (39, 40, 41)], 64)
    journal.commit("a", 46)
    journal.commit("b", 46)
    assert segment_firsts(directory) == [39, 42, 45]  # 'c' still needs them
    assert journal.size == 9 * RECORD
    journal.unregister("c")
    journal.commit("a", 48)
    assert segment_firsts(directory) == [45]  # 'b' at 46 still needs [45, 48)
    assert journal.size == 3 * RECORD


def test_block_policy_raises_journal_full_and_force_still_writes(
    open_journal, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(max_bytes=210, segment_bytes=64)  # 10 records of 21 bytes
    assert journal.segment_bytes == 64  # a small max_bytes keeps the requested segment size
    journal.register("slow")
    for i in range(10):
        journal.append(payload(i))
    assert journal.size == 210
    assert journal.full
    with pytest.raises(JournalFull, match="spool is full"):
        journal.append(payload(10))
    assert journal.end == 10  # nothing was written
    assert journal.size == 210
    assert_segment(segment_path(directory, 9), [payload(9)], 64)

    assert journal.append(payload(10), force=True) == 10
    assert journal.end == 11 and journal.size == 231
    assert_segment(segment_path(directory, 9), [payload(9), payload(10)], 64)

    # Once the consumer catches up, the delivered segments are trimmed and appends work again.
    reader = open_journal.reader(journal, "slow")
    assert read_all(reader) == [(i, payload(i)) for i in range(11)]
    journal.commit("slow", 11)
    assert segment_firsts(directory) == [9]
    assert journal.size == 2 * RECORD
    assert not journal.full
    assert journal.append(payload(11)) == 11
    assert reader.read(10) == [(11, payload(11))]
    reader.close()


def test_block_policy_trims_delivered_segments_to_make_room(open_journal, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    journal = open_journal(max_bytes=210, segment_bytes=64)
    journal.register("a")
    journal.register("gone")
    for i in range(10):
        journal.append(payload(i))
    journal.commit("a", 8)  # 'gone' (at 0) still holds every segment
    assert journal.size == 210
    assert segment_firsts(directory) == [0, 3, 6, 9]
    journal.unregister("gone")  # e.g. a sink removed from the configuration
    assert journal.append(payload(10)) == 10  # the append trims segments [0,3) and [3,6)
    assert segment_firsts(directory) == [6, 9]
    assert journal.size == 5 * RECORD  # records 6 to 10
    assert journal.dropped == {}


def test_drop_policy_frees_space_and_counts_each_consumers_loss(
    open_journal, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    # Frames of 50 bytes, 4 per segment, 5 segments fit in max_bytes.
    journal = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    for name in ("a", "b", "c"):
        journal.register(name)
    for i in range(20):
        journal.append(payload(i, 42))
    assert journal.size == 1000
    assert not journal.full  # policy drop never refuses
    journal.commit("b", 2)
    journal.commit("c", 10)
    assert segment_firsts(directory) == [0, 4, 8, 12, 16]

    assert journal.append(payload(20, 42)) == 20  # drops segment [0, 4)
    assert segment_firsts(directory) == [4, 8, 12, 16, 20]
    assert journal.dropped == {"a": 4, "b": 2}
    assert (journal.cursor("a"), journal.cursor("b"), journal.cursor("c")) == (4, 4, 10)
    assert (directory / "cursors" / "a").read_bytes() == b"00000000000000000004"
    assert (directory / "cursors" / "b").read_bytes() == b"00000000000000000004"
    assert (directory / "cursors" / "c").read_bytes() == b"00000000000000000010"  # untouched
    assert journal.size == 17 * 50  # 4 frames out, 1 in
    assert_segment(segment_path(directory, 20), [payload(20, 42)], 200)

    for i in range(21, 29):  # offset 24 drops [4, 8), offset 28 drops [8, 12)
        journal.append(payload(i, 42))
    assert segment_firsts(directory) == [12, 16, 20, 24, 28]
    assert journal.dropped == {"a": 12, "b": 10, "c": 2}
    assert (journal.cursor("a"), journal.cursor("b"), journal.cursor("c")) == (12, 12, 12)
    assert journal.size == 850
    assert journal.end == 29
    assert (directory / "cursors" / "c").read_bytes() == b"00000000000000000012"
    for first in (12, 16, 20, 24):  # full segments: 4 frames of 50 bytes, no room left
        records = [payload(i, 42) for i in range(first, first + 4)]
        assert_segment(segment_path(directory, first), records, 200)
    assert_segment(segment_path(directory, 28), [payload(28, 42)], 200)

    # What is left reads back intact, from the moved cursor.
    reader = open_journal.reader(journal, "c")
    assert read_all(reader) == [(i, payload(i, 42)) for i in range(12, 29)]
    reader.close()

    # The moved cursors were persisted: a reopen resumes past the lost records.
    open_journal.close(journal)
    reopened = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    assert reopened.end == 29
    assert reopened.size == 850
    assert reopened.register("a") == 12
    assert reopened.dropped == {}


def test_drop_policy_spares_delivered_data_before_undelivered(open_journal) -> None:
    """Segments every consumer has passed are trimmed first: no loss is counted for them."""
    journal = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    journal.register("a")
    journal.register("gone")
    for i in range(20):
        journal.append(payload(i, 42))
    journal.commit("a", 8)
    journal.unregister("gone")
    journal.append(payload(20, 42))
    assert journal.dropped == {}
    assert journal.cursor("a") == 8
    assert journal.size == 650


def test_the_reader_rewinds_after_a_drop(open_journal) -> None:
    journal = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    journal.register("a")
    for i in range(20):
        journal.append(payload(i, 42))
    reader = open_journal.reader(journal, "a")
    assert [o for o, _ in reader.read(3)] == [0, 1, 2]  # read, not committed

    for i in range(20, 25):  # drops [0, 4) and [4, 8): the reader's file is deleted under it
        journal.append(payload(i, 42))
    assert journal.cursor("a") == 8
    assert journal.dropped["a"] > 0  # the exact count: see the two tests at the end
    assert read_all(reader, batch=4) == [(i, payload(i, 42)) for i in range(8, 25)]

    # An explicit rewind goes back to the committed cursor.
    journal.commit("a", 10)
    reader.rewind()
    assert [o for o, _ in reader.read(2)] == [10, 11]
    reader.close()


def test_a_reader_ahead_of_a_drop_does_not_repeat_records(open_journal) -> None:
    journal = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    journal.register("a")
    for i in range(20):
        journal.append(payload(i, 42))
    reader = open_journal.reader(journal, "a")
    assert [o for o, _ in reader.read(6)] == list(range(6))  # in flight, uncommitted
    journal.append(payload(20, 42))  # drops [0, 4): the cursor moves to 4 < the reader's 6
    assert [o for o, _ in reader.read(3)] == [6, 7, 8]
    journal.commit("a", 9)
    assert journal.cursor("a") == 9
    reader.close()


def test_a_concurrent_reader_sees_every_record_once_in_order(open_journal) -> None:
    total = 20_000
    journal = open_journal(segment_bytes=4096)
    names = ("first", "second")
    for name in names:
        journal.register(name)
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    deadline = time.monotonic() + 30

    def consume(name: str) -> None:
        reader = journal.reader(name)
        seen: list[int] = []
        try:
            while len(seen) < total and time.monotonic() < deadline:
                batch = reader.read(97)
                for offset, data in batch:
                    assert data == payload(offset), (offset, data)
                    seen.append(offset)
                if batch:
                    journal.commit(name, batch[-1][0] + 1)  # trims behind both readers
                else:
                    time.sleep(0)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            reader.close()
            results[name] = seen

    def produce() -> None:
        for i in range(total):
            assert journal.append(payload(i)) == i

    threads = [threading.Thread(target=consume, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    produce()
    for thread in threads:
        thread.join(timeout=35)
        assert not thread.is_alive()
    assert errors == []
    for name in names:
        assert results[name] == list(range(total)), name
    # All delivered: all but the last segment trimmed (195 frames of 21 bytes fit in 4096).
    (last,) = segment_firsts(journal.directory)
    assert last == total // 195 * 195
    assert journal.size == (total - last) * RECORD
    records = [payload(i) for i in range(last, total)]
    assert_segment(segment_path(journal.directory, last), records, 4096)


def test_a_concurrent_reader_under_the_drop_policy_never_repeats_or_reorders(
    open_journal,
) -> None:
    """The writer outruns the reader and drops: what the reader sees is increasing, intact,
    and every record it missed was counted as dropped."""
    total = 20_000
    journal = open_journal(max_bytes=8 * 1024, segment_bytes=1024, on_full="drop")
    journal.register("slow")
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def consume() -> None:
        reader = journal.reader("slow")
        try:
            while True:
                finished = done.is_set()  # read once more after the writer stopped
                batch = reader.read(50)
                for offset, data in batch:
                    assert data == payload(offset), (offset, data)
                    seen.append(offset)
                if batch:
                    journal.commit("slow", batch[-1][0] + 1)
                    time.sleep(0.0005)  # slower than the writer
                elif finished:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=consume)
    thread.start()
    for i in range(total):
        assert journal.append(payload(i)) == i
    done.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
    assert seen == sorted(set(seen))  # strictly increasing: no repeat, no reordering
    assert seen[-1] == total - 1  # it caught up at the end
    dropped = journal.dropped.get("slow", 0)
    assert dropped > 0
    # Every missed record is counted; today more are (records in the reader's hands when their
    # segment was dropped: see the last test). With the proposed fix this is an equality.
    assert total - len(seen) <= dropped
    assert journal.size <= 8 * 1024
    assert journal.size == (total - segment_firsts(journal.directory)[0]) * RECORD


def test_drop_policy_never_raises_journal_full(open_journal) -> None:
    """BUG: with a spool smaller than about one minimum segment (4096 bytes), the only segment
    is the one being written, ``_make_room`` cannot drop it and policy 'drop' raises
    JournalFull like policy 'block' would (PayloadLog.record then force-appends past the limit
    for successful inferences and discards failed ones as 'spool_full')."""
    journal = open_journal(max_bytes=4096, on_full="drop")
    journal.register("slow")
    for i in range(1000):  # 21 KB through a 4 KB spool
        journal.append(payload(i))
    assert journal.size <= 4096
    assert journal.end == 1000
    assert journal.size == (1000 - segment_firsts(journal.directory)[0]) * RECORD
    assert journal.dropped["slow"] > 0


def test_records_already_read_are_not_counted_as_dropped(open_journal) -> None:
    """BUG (metrics): a drop counts as lost every record behind the consumer's committed cursor,
    including records its reader already handed to the sink. Those are delivered (the worker
    keeps the batch in memory and retries it) and then committed, yet they are reported lost
    too: under load servekit_payload_events_dropped{reason="spool_full"} over-counts by up to
    a batch per drop (hundreds of records in the concurrent test above)."""
    journal = open_journal(max_bytes=1000, segment_bytes=200, on_full="drop")
    journal.register("a")
    for i in range(20):
        journal.append(payload(i, 42))
    reader = open_journal.reader(journal, "a")
    in_flight = reader.read(6)  # the sink is delivering records 0..5
    journal.append(payload(20, 42))  # drops segment [0, 4)
    journal.commit("a", in_flight[-1][0] + 1)  # ... and then they were delivered
    reader.close()
    assert journal.cursor("a") == 6
    assert journal.dropped.get("a", 0) == 0  # nothing was lost: 0..5 delivered, 6.. kept


def test_an_empty_record_is_refused(open_journal) -> None:
    """A zero length marks the end of the written data, so an empty record cannot exist."""
    journal = open_journal(segment_bytes=4096)
    journal.register("a")
    assert journal.append(b"a") == 0
    with pytest.raises(ValueError, match="cannot be empty"):
        journal.append(b"")
    assert journal.append(b"c") == 1
    reader = open_journal.reader(journal, "a")
    assert read_all(reader) == [(0, b"a"), (1, b"c")]


def test_a_record_larger_than_an_empty_segment_is_kept(open_journal, tmp_path: Path) -> None:
    """A frame larger than the empty segment being written grows that segment (a new one
    would start at the same offset, hence have the same file name, and be trimmed with
    undelivered records in it)."""
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=4096)
    journal.register("slow")
    journal.register("fast")
    big = b"b" * 5000
    assert journal.append(big) == 0
    assert journal.append(payload(1)) == 1
    fast = open_journal.reader(journal, "fast")
    assert read_all(fast) == [(0, big), (1, payload(1))]
    journal.commit("fast", 2)  # 'slow' (at 0) holds every record back
    assert segment_firsts(directory) == [0, 1]
    slow = open_journal.reader(journal, "slow")
    assert read_all(slow) == [(0, big), (1, payload(1))]


def test_appends_do_not_wait_while_a_commit_removes_segment_files(
    open_journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a written segment takes milliseconds: the commit does it outside the lock that
    append() (the event loop's thread) takes."""
    directory = tmp_path / "spool"
    journal = open_journal(segment_bytes=64)  # 3 records per segment
    journal.register("a")
    for i in range(9):
        journal.append(payload(i))
    removing, release = threading.Event(), threading.Event()
    unlink = Path.unlink

    def slow_unlink(path: Path, missing_ok: bool = False) -> None:
        removing.set()
        assert release.wait(10)
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", slow_unlink)
    committer = threading.Thread(target=journal.commit, args=("a", 9))
    committer.start()
    try:
        assert removing.wait(10)
        offsets: list[int] = []
        appender = threading.Thread(target=lambda: offsets.append(journal.append(payload(9))))
        appender.start()
        appender.join(5)
        assert offsets == [9], "append() waited for the segment removal"
        assert journal.size == 4 * RECORD  # the trimmed segments are already forgotten
    finally:
        release.set()
        committer.join(10)
    assert not committer.is_alive()
    assert segment_firsts(directory) == [6, 9]


def test_a_spool_written_with_crc32_checksums_is_still_read(open_journal, tmp_path: Path) -> None:
    """Before 2026-12-05 frames carried zlib's CRC-32: such a spool, left by an older server,
    is replayed by a newer one, and new records go after its records."""
    directory = tmp_path / "spool"
    segments = directory / "segments"
    segments.mkdir(parents=True)
    old = [payload(i) for i in range(3)]
    framed = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in old)
    (segments / "00000000000000000000.seg").write_bytes(framed + bytes(4096 - len(framed)))

    journal = open_journal()
    assert journal.end == 3
    assert journal.append(payload(3)) == 3
    journal.register("a")
    reader = open_journal.reader(journal, "a")
    assert read_all(reader, batch=10) == [(i, payload(i)) for i in range(4)]
    reader.close()


def test_prefault_populates_the_pages_the_writer_reaches_next(open_journal) -> None:
    """After ``prefault`` the writer's first writes to the next pages take no page faults (the
    kernel's work was done beforehand, in the calling thread); without it each new page does."""
    journal = open_journal(segment_bytes=8 * 1024 * 1024)
    record = b"p" * 200

    def faults_writing(count: int) -> int:
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(count):
            journal.append(record)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    per_megabyte = 1024 * 1024 // (FRAME + len(record))
    assert faults_writing(per_megabyte) >= 200  # 256 new pages, unpopulated
    assert journal.prefault()
    assert faults_writing(per_megabyte) <= 5
