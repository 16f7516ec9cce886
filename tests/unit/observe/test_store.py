"""The embedded payload store: writes, dedupe, retention by age and size, schema migration."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from servekit.observe.payloads import store as store_module
from servekit.observe.payloads.record import InferenceRecord, TensorRecord, encode
from servekit.observe.payloads.store import LogQuery, PayloadStore


def make_record(i: int, at: float, model: str = "iris", payload_floats: int = 4) -> InferenceRecord:
    return InferenceRecord(
        id=f"r-{i}",
        model=model,
        version="2",
        service=model,
        variant="canary",
        protocol="grpc",
        time=at,
        latency_ms=1.5,
        http_status=200,
        inputs=[
            TensorRecord(
                "x", "FP64", [1, payload_floats], np.arange(payload_floats, dtype="f8").tobytes()
            )
        ],
        outputs=[TensorRecord("predict", "INT64", [1], np.array([i % 3]).tobytes())],
    )


@pytest.fixture
def store(tmp_path: Path) -> PayloadStore:
    return PayloadStore(tmp_path / "store.db")


def test_rows_round_trip_with_every_field(store: PayloadStore) -> None:
    now = time.time()
    store.insert([make_record(i, now + i) for i in range(3)])
    rows = store.query(LogQuery(model="iris"))
    assert [r["id"] for r in rows] == ["r-2", "r-1", "r-0"]
    first = rows[-1]
    assert first["variant"] == "canary" and first["protocol"] == "grpc"
    assert first["service"] == "iris" and first["latency_ms"] == 1.5
    assert first["http_status"] == 200 and first["prediction"] == [0]
    assert first["request"]["inputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0]
    assert [r["id"] for r in store.query(LogQuery(prediction="2"))] == ["r-2"]


def test_more_rows_than_one_statement_holds(store: PayloadStore) -> None:
    now = time.time()
    count = store_module.ROWS_PER_STATEMENT * 2 + 7
    store.insert([make_record(i, now) for i in range(count)])
    assert store.counts()["inferences"] == count


def test_a_redelivered_event_is_stored_once(store: PayloadStore) -> None:
    now = time.time()
    batch = [make_record(i, now) for i in range(5)]
    store.insert(batch)
    store.insert(batch[2:])  # a crash between the insert and the cursor commit
    assert store.counts()["inferences"] == 5


def test_age_retention_deletes_exactly_the_old_events(store: PayloadStore) -> None:
    now = time.time()
    old = [make_record(i, now - 3600 - (100 - i)) for i in range(100)]
    new = [make_record(100 + i, now - 10 + i * 0.01) for i in range(57)]
    store.insert(old)
    store.insert(new)
    assert store.apply_retention(max_age_seconds=600, max_bytes=1 << 40) == 100
    left = store.query(LogQuery(limit=1000))
    assert sorted(r["id"] for r in left) == sorted(r.id for r in new)
    assert store.apply_retention(max_age_seconds=600, max_bytes=1 << 40) == 0


def test_size_retention_deletes_the_oldest_until_under_the_limit(store: PayloadStore) -> None:
    now = time.time()
    store.insert([make_record(i, now + i * 1e-3, payload_floats=512) for i in range(2000)])
    used = store_module._used_bytes(store.connection())
    limit = used // 2
    deleted = store.apply_retention(max_age_seconds=86400, max_bytes=limit)
    assert 0 < deleted < 2000
    remaining = store.query(LogQuery(limit=10_000))
    assert len(remaining) == 2000 - deleted
    assert min(int(r["id"][2:]) for r in remaining) == deleted  # the oldest went first
    store.insert([make_record(5000 + i, now + 10, payload_floats=512) for i in range(deleted)])
    assert store_module._used_bytes(store.connection()) <= used * 1.05  # freed pages reused


def test_a_store_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE inferences (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, model TEXT NOT NULL,
            version TEXT NOT NULL, service TEXT NOT NULL, variant TEXT NOT NULL,
            protocol TEXT NOT NULL, time REAL NOT NULL, latency_ms REAL NOT NULL,
            status TEXT NOT NULL, http_status INTEGER NOT NULL, error TEXT,
            payload BLOB NOT NULL, prediction TEXT, size INTEGER NOT NULL,
            UNIQUE (id, model, time));
        CREATE INDEX inferences_by_model ON inferences (model, version, time);
        CREATE INDEX inferences_by_time ON inferences (time);
        """
    )
    record = make_record(1, time.time())
    payload = encode(record)
    conn.execute(
        "INSERT INTO inferences (id, model, version, service, variant, protocol, time, "
        "latency_ms, status, http_status, error, payload, prediction, size) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("r-1", "iris", "2", "iris", "canary", "grpc", record.time, 1.5, "ok", 200, None,
         payload, "[1]", len(payload)),
    )  # fmt: skip
    conn.commit()
    conn.close()
    store = PayloadStore(path)
    (row,) = store.query(LogQuery())
    assert row["id"] == "r-1" and row["variant"] == "canary" and row["prediction"] == [1]
    assert store.connection().execute("PRAGMA user_version").fetchone() == (2,)
    PayloadStore(path)  # opening a migrated store again changes nothing
    assert store.counts()["inferences"] == 1
