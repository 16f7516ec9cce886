"""The embedded payload store: one SQLite file of logged inferences and their feedback.

It is what ``GET /v2/logs``, ``servekit logs`` and the feedback metrics read. Rows are keyed by
(event id, model, time), so an event delivered twice after a crash is stored once.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from servekit.observe.payloads.record import (
    IndexedFields,
    InferenceRecord,
    decode,
    decode_indexed,
    encode,
    first_values,
    request_json,
    response_json,
)

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS inferences (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    time REAL NOT NULL,
    status TEXT NOT NULL,
    payload BLOB NOT NULL,
    prediction TEXT,
    UNIQUE (model, id, time)
);
CREATE INDEX IF NOT EXISTS inferences_by_model ON inferences (model, version, time);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    time REAL NOT NULL,
    truth TEXT,
    reward REAL
);
CREATE INDEX IF NOT EXISTS feedback_by_id ON feedback (model, id);
CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (model, time);
"""
"""Only what queries filter on is a column (and only what they look up is indexed): each column
and index costs the store sink time per event. Everything else is in ``payload``; time follows
``seq`` closely (events are appended as they finish), so age retention walks ``seq``."""

_INSERT = (
    "INSERT OR IGNORE INTO inferences (id, model, version, time, status, payload, prediction) "
    "VALUES "
)
_ROW = "(?,?,?,?,?,?,?)"
ROWS_PER_STATEMENT = 256
"""One INSERT with many rows binds and steps once: about half the cost of ``executemany``."""
_RECORD_FIELDS = ("service", "variant", "protocol", "latency_ms", "http_status", "error")

MAX_QUERY_ROWS = 10_000


@dataclass(slots=True)
class LogQuery:
    model: str | None = None
    version: str | None = None
    id: str | None = None
    since: float | None = None
    until: float | None = None
    prediction: str | None = None
    """Rows whose prediction (first output) contains this value."""
    status: str | None = None
    limit: int = 100


@dataclass(slots=True)
class LabelledPrediction:
    """One logged inference joined to its latest feedback."""

    id: str
    version: str
    time: float
    response: dict[str, Any]
    truth: Any
    reward: float | None
    feedback_time: float


class PayloadStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self.connection()
        with _transaction(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < SCHEMA_VERSION and _has_table(conn, "inferences"):
                conn.execute("ALTER TABLE inferences RENAME TO inferences_v1")
                conn.execute("DROP INDEX IF EXISTS inferences_by_model")
                conn.execute("DROP INDEX IF EXISTS inferences_by_time")
        conn.executescript(SCHEMA)
        if _has_table(conn, "inferences_v1"):
            with _transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO inferences (id, model, version, time, status, payload, "
                    "prediction) SELECT id, model, version, time, status, payload, prediction "
                    "FROM inferences_v1 ORDER BY seq"
                )
                conn.execute("DROP TABLE inferences_v1")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        """One connection per thread (SQLite connections are not shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- writing ----------------------------------------------------------------------------

    def insert(self, records: Iterable[InferenceRecord], mode: str = "all") -> None:
        """Store records (kept as msgpack; JSON is made when queried)."""
        values: list[Any] = []
        for r in records:
            if mode == "request":
                r = msgspec.structs.replace(r, outputs=None)
            elif mode == "response":
                r = msgspec.structs.replace(r, inputs=None, parameters={})
            values += (r.id, r.model, r.version, r.time, r.status, encode(r), _prediction(r))
        self._write(values)

    def insert_encoded(self, payloads: Iterable[bytes | memoryview]) -> None:
        """Store records as the journal holds them: only the indexed fields are decoded and
        the bytes are kept as they are (the whole record; ``mode`` 'all')."""
        values: list[Any] = []
        for payload in payloads:
            r = decode_indexed(payload)
            values += (r.id, r.model, r.version, r.time, r.status, bytes(payload), _prediction(r))
        self._write(values)

    def _write(self, values: list[Any]) -> None:
        conn = self.connection()
        width, step = _ROW.count("?"), ROWS_PER_STATEMENT
        with _transaction(conn):
            for start in range(0, len(values), width * step):
                chunk = values[start : start + width * step]
                conn.execute(_INSERT + ",".join([_ROW] * (len(chunk) // width)), chunk)

    def add_feedback(self, model: str, event_id: str, truth: Any, reward: float | None) -> None:
        conn = self.connection()
        truth_json = orjson.dumps(truth).decode() if truth is not None else None
        with _transaction(conn):
            conn.execute(
                "INSERT INTO feedback (id, model, time, truth, reward) VALUES (?,?,?,?,?)",
                (event_id, model, time.time(), truth_json, reward),
            )

    def apply_retention(self, max_age_seconds: float, max_bytes: int) -> int:
        """Delete events (and feedback) older than the age limit, then the oldest beyond the
        size limit (the pages the store uses); the number of events deleted."""
        conn = self.connection()
        cutoff = time.time() - max_age_seconds
        with _transaction(conn):
            last = self._last_seq_before(conn, cutoff)
            deleted = (
                conn.execute("DELETE FROM inferences WHERE seq <= ?", (last,)).rowcount
                if last is not None
                else 0
            )
            conn.execute("DELETE FROM feedback WHERE time < ?", (cutoff,))
            used = _used_bytes(conn)
            if used > max_bytes:
                (count,) = conn.execute("SELECT COUNT(*) FROM inferences").fetchone()
                excess = math.ceil(count * (used - max_bytes) / used)
                deleted += conn.execute(
                    "DELETE FROM inferences WHERE seq IN "
                    "(SELECT seq FROM inferences ORDER BY seq LIMIT ?)",
                    (excess,),
                ).rowcount
        return deleted

    @staticmethod
    def _last_seq_before(conn: sqlite3.Connection, cutoff: float) -> int | None:
        """The newest seq whose event is older than ``cutoff``: a binary search over seq
        (time grows with seq), so no index on time is kept up to date per event."""
        first = conn.execute("SELECT seq, time FROM inferences ORDER BY seq LIMIT 1").fetchone()
        if first is None or first[1] >= cutoff:
            return None
        low, (high,) = first[0], conn.execute("SELECT MAX(seq) FROM inferences").fetchone()
        at = "SELECT seq, time FROM inferences WHERE seq >= ? ORDER BY seq LIMIT 1"
        while low < high:  # invariant: the event at or after ``low`` is older than cutoff
            middle = (low + high + 1) // 2
            seq, when = conn.execute(at, (middle,)).fetchone()
            if when < cutoff:
                low = seq
            else:
                high = middle - 1
        return low

    # -- reading ----------------------------------------------------------------------------

    def has_inference(self, model: str, event_id: str) -> str | None:
        """The version that answered ``event_id`` for ``model``, or None if no prediction is
        stored (a failed inference predicted nothing, so feedback has nothing to join)."""
        row = (
            self.connection()
            .execute(
                "SELECT version FROM inferences WHERE id = ? AND model = ? AND status = 'ok' "
                "ORDER BY seq DESC LIMIT 1",
                (event_id, model),
            )
            .fetchone()
        )
        return row[0] if row else None

    def query(self, q: LogQuery) -> list[dict[str, Any]]:
        """Matching events, newest first, with their latest feedback; empty fields left out."""
        where, args = [], []
        for column, value in (
            ("i.model", q.model), ("i.version", q.version), ("i.id", q.id), ("i.status", q.status)
        ):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.since is not None:
            where.append("i.time >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("i.time < ?")
            args.append(q.until)
        if q.prediction is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(i.prediction) WHERE value = ?)")
            args.append(_typed(q.prediction))
        sql = (
            "SELECT i.id, i.model, i.version, i.time, i.status, i.payload, i.prediction, "
            "f.truth, f.reward FROM inferences i LEFT JOIN feedback f ON f.seq = "
            "(SELECT MAX(seq) FROM feedback WHERE model = i.model AND id = i.id)"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.time DESC, i.seq DESC LIMIT ?"
        args.append(min(max(q.limit, 1), MAX_QUERY_ROWS))
        columns = (
            "id", "model", "version", "time", "status", "payload", "prediction", "truth", "reward"
        )  # fmt: skip
        rows = []
        for row in self.connection().execute(sql, args):
            item = {k: v for k, v in zip(columns, row, strict=True) if v is not None}
            record = decode(item.pop("payload"))
            for key in _RECORD_FIELDS:
                value = getattr(record, key)
                if value is not None:
                    item[key] = value
            if record.inputs is not None:
                item["request"] = request_json(record)
            if record.outputs is not None or record.error is not None:
                item["response"] = response_json(record)
            for key in ("prediction", "truth"):
                if key in item:
                    item[key] = orjson.loads(item[key])
            rows.append(item)
        return rows

    def labelled(self, model: str, since: float | None = None) -> list[LabelledPrediction]:
        """Feedback received since ``since``, each joined to the prediction it is about.

        Feedback whose prediction is not stored (yet) is left out; it joins once it lands.
        """
        sql = (
            "SELECT i.id, i.version, i.time, i.payload, f.truth, f.reward, f.time FROM feedback f "
            "JOIN inferences i ON i.seq = (SELECT MAX(seq) FROM inferences "
            "WHERE id = f.id AND model = f.model) "
            "WHERE f.model = ? AND f.seq = (SELECT MAX(seq) FROM feedback "
            "WHERE model = f.model AND id = f.id)"
        )
        args: list[Any] = [model]
        if since is not None:
            sql += " AND f.time >= ?"
            args.append(since)
        rows = self.connection().execute(sql, args)
        return [
            LabelledPrediction(
                id=row[0],
                version=row[1],
                time=row[2],
                response=response_json(decode(row[3])),
                truth=orjson.loads(row[4]) if row[4] is not None else None,
                reward=row[5],
                feedback_time=row[6],
            )
            for row in rows
        ]

    def counts(self) -> dict[str, int]:
        conn = self.connection()
        (inferences,) = conn.execute("SELECT COUNT(*) FROM inferences").fetchone()
        (feedback,) = conn.execute("SELECT COUNT(*) FROM feedback").fetchone()
        return {"inferences": inferences, "feedback": feedback}


class _transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _prediction(record: InferenceRecord | IndexedFields) -> str | None:
    found = first_values(record.outputs)
    return orjson.dumps(found).decode() if found is not None else None


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the pages in use (free pages are reused, so this is what grows)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return (pages - free) * size


def _typed(value: str) -> Any:
    """A query value as JSON would have stored it: 2 matches the label 2, 'setosa' a string."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
