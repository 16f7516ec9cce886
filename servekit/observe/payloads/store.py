"""The embedded payload store: one SQLite file of logged inferences and their feedback.

It is what ``GET /v2/logs``, ``servekit logs`` and the feedback metrics read. Rows are keyed by
(event id, model, time), so an event delivered twice after a crash is stored once.
"""

from __future__ import annotations

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
    InferenceRecord,
    decode,
    encode,
    first_values,
    request_json,
    response_json,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS inferences (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    service TEXT NOT NULL,
    variant TEXT NOT NULL,
    protocol TEXT NOT NULL,
    time REAL NOT NULL,
    latency_ms REAL NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error TEXT,
    payload BLOB NOT NULL,
    prediction TEXT,
    size INTEGER NOT NULL,
    UNIQUE (id, model, time)
);
CREATE INDEX IF NOT EXISTS inferences_by_model ON inferences (model, version, time);
CREATE INDEX IF NOT EXISTS inferences_by_time ON inferences (time);
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
        self.connection().executescript(SCHEMA)

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
        """Store records as they came from the spool (msgpack); JSON is made when queried, so
        writing costs a few microseconds per event."""
        rows = []
        for r in records:
            if mode == "request":
                r = msgspec.structs.replace(r, outputs=None)
            elif mode == "response":
                r = msgspec.structs.replace(r, inputs=None, parameters={})
            payload = encode(r)
            prediction = first_values(r.outputs)
            rows.append(
                (
                    r.id, r.model, r.version, r.service, r.variant, r.protocol, r.time,
                    r.latency_ms, r.status, r.http_status, r.error, payload,
                    orjson.dumps(prediction).decode() if prediction is not None else None,
                    len(payload),
                )
            )  # fmt: skip
        conn = self.connection()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR IGNORE INTO inferences (id, model, version, service, variant, "
                "protocol, time, latency_ms, status, http_status, error, payload, prediction, "
                "size) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

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
        size limit; the number of events deleted."""
        conn = self.connection()
        cutoff = time.time() - max_age_seconds
        with _transaction(conn):
            deleted = conn.execute("DELETE FROM inferences WHERE time < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM feedback WHERE time < ?", (cutoff,))
            (total,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM inferences").fetchone()
            if total > max_bytes:
                excess, last = total - max_bytes, None
                for seq, size in conn.execute("SELECT seq, size FROM inferences ORDER BY seq"):
                    excess, last = excess - size, seq
                    if excess <= 0:
                        break
                deleted += conn.execute("DELETE FROM inferences WHERE seq <= ?", (last,)).rowcount
        return deleted

    # -- reading ----------------------------------------------------------------------------

    def has_inference(self, model: str, event_id: str) -> str | None:
        """The version that answered ``event_id`` for ``model``, or None if none is stored."""
        row = (
            self.connection()
            .execute(
                "SELECT version FROM inferences WHERE id = ? AND model = ? "
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
            "SELECT i.id, i.model, i.version, i.service, i.variant, i.protocol, i.time, "
            "i.latency_ms, i.status, i.http_status, i.error, i.payload, i.prediction, "
            "f.truth, f.reward FROM inferences i LEFT JOIN feedback f ON f.seq = "
            "(SELECT MAX(seq) FROM feedback WHERE model = i.model AND id = i.id)"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.time DESC, i.seq DESC LIMIT ?"
        args.append(min(max(q.limit, 1), MAX_QUERY_ROWS))
        columns = (
            "id", "model", "version", "service", "variant", "protocol", "time", "latency_ms",
            "status", "http_status", "error", "payload", "prediction", "truth", "reward",
        )  # fmt: skip
        rows = []
        for row in self.connection().execute(sql, args):
            item = {k: v for k, v in zip(columns, row, strict=True) if v is not None}
            record = decode(item.pop("payload"))
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
