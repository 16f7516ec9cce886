"""The spool seen from the shipper process: a SpoolFollower reads what the Journal writes across
segments, commits to the cursor files the Journal trims by, and never moves a cursor back past
records the Journal dropped."""

from __future__ import annotations

from pathlib import Path

from servekit.observe.payloads.follower import SpoolFollower
from servekit.observe.payloads.journal import Journal, read_cursor


def payload(n: int) -> bytes:
    return f"record-{n:06d}".encode()


def segment_count(directory: Path) -> int:
    return len(list((directory / "segments").glob("*.seg")))


def test_follower_reads_across_segments_and_the_writer_trims_by_its_cursor(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    journal.add_external("audit")
    follower = SpoolFollower(tmp_path)
    assert follower.register("audit") == 0
    reader = follower.reader("audit")
    for n in range(500):  # three segments of 4 KiB
        journal.append(payload(n))
    got: list[tuple[int, bytes]] = []
    while batch := reader.read(64):
        got += batch
        follower.commit("audit", batch[-1][0] + 1)
    assert [offset for offset, _ in got] == list(range(500))
    assert [bytes(p) for _, p in got] == [payload(n) for n in range(500)]
    assert follower.visible_end() == 500

    assert segment_count(tmp_path) == 3
    assert journal.committed("audit") == 500  # read from the file the follower wrote
    journal.maintain()
    assert segment_count(tmp_path) == 1
    assert journal.size < 4096

    journal.append(payload(500))  # written after the reader reached the end: seen next time
    assert [offset for offset, _ in reader.read(64)] == [500]
    reader.close()
    follower.close()
    journal.close()


def test_a_drop_by_the_writer_moves_the_followers_cursor_forward(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=8192, segment_bytes=2048, on_full="drop")
    journal.add_external("audit")
    follower = SpoolFollower(tmp_path)
    follower.register("audit")
    reader = follower.reader("audit")
    first = reader.read(10)  # in the sink's hands, not committed
    assert first == []
    for n in range(2000):  # far more than the spool holds: the oldest segments are dropped
        journal.append(payload(n))
    dropped = journal.take_dropped("audit")
    assert dropped > 0
    cursor = follower.cursor("audit")
    assert cursor >= dropped
    follower.commit("audit", 5)  # a late commit of an old batch cannot move the file back
    assert read_cursor(follower._fds["audit"]) == cursor
    offsets = [offset for offset, _ in reader.read(100_000)]
    assert offsets == list(range(cursor, 2000))
    reader.close()
    follower.close()
    journal.close()
