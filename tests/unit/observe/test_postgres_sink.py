"""The PostgreSQL sink against a real server: columns, JSON, deduplication, modes, outages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from servekit.observe.payloads.config import PostgresSinkConfig
from servekit.observe.payloads.record import (
    InferenceRecord,
    capture,
    request_json,
    response_json,
)
from servekit.observe.payloads.sinks import build_sink
from servekit.observe.payloads.sinks.postgres import PostgresSink
from servekit.types.tensors import Tensor

psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000.25
COLUMNS = (
    "id, model, version, service, variant, protocol, time, latency_ms, status, http_status, "
    "error, request, response, prediction"
)


def make_record(n: int, **overrides: Any) -> InferenceRecord:
    inputs = [Tensor.from_array("x", np.array([[float(n), 2.5]]))]
    outputs = [Tensor.from_array("label", np.array([n % 3, 7], dtype=np.int64))]
    fields: dict[str, Any] = {
        "id": f"req-{n}",
        "model": "iris",
        "version": "2",
        "service": "iris-svc",
        "protocol": "v2",
        "time": T0 + n,
        "latency_ms": 1.5 + n,
        "inputs": capture(inputs, frozenset(), 1 << 20),
        "outputs": capture(outputs, frozenset(), 1 << 20),
        "parameters": {"temperature": 0.5},
    }
    fields.update(overrides)
    return InferenceRecord(**fields)


@pytest.fixture
def table() -> str:
    """A table of its own per test, so tests sharing the server do not see each other's rows."""
    return f"inferences_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(postgres: Any) -> Iterator[Any]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_sink(postgres: Any, table: str) -> Iterator[Any]:
    sinks: list[PostgresSink] = []

    def make(**options: Any) -> PostgresSink:
        config = PostgresSinkConfig(type="postgres", dsn=postgres.dsn, table=table, **options)
        sink = PostgresSink(config)
        sinks.append(sink)
        sink.open()
        return sink

    yield make
    for sink in sinks:
        sink.close()


def rows(db: Any, table: str) -> list[dict[str, Any]]:
    query = f"SELECT {COLUMNS} FROM {table} ORDER BY time, id"
    with db.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        return cursor.execute(query).fetchall()


def test_build_sink_and_names(postgres: Any) -> None:
    config = PostgresSinkConfig(type="postgres", dsn=postgres.dsn)
    sink = build_sink(config)
    assert isinstance(sink, PostgresSink)
    assert sink.name == "postgres" and sink.options is config
    named = PostgresSink(PostgresSinkConfig(type="postgres", dsn=postgres.dsn, name="warehouse"))
    assert named.name == "warehouse"


def test_open_creates_table_with_unique_key_and_index(make_sink: Any, db: Any, table: str) -> None:
    make_sink()
    make_sink()  # a second open finds the table there
    types = dict(
        db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
            (table,),
        ).fetchall()
    )
    assert types == {
        "id": "text", "model": "text", "version": "text", "service": "text", "variant": "text",
        "protocol": "text", "time": "timestamp with time zone", "latency_ms": "double precision",
        "status": "text", "http_status": "integer", "error": "text", "request": "jsonb",
        "response": "jsonb", "prediction": "jsonb",
    }  # fmt: skip
    query = "SELECT indexdef FROM pg_indexes WHERE tablename = %s"
    indexes = [d for (d,) in db.execute(query, (table,))]
    assert any("UNIQUE" in d and '(id, model, "time")' in d for d in indexes), indexes
    assert any('(model, version, "time")' in d for d in indexes), indexes


def test_records_are_stored_with_columns_and_json(make_sink: Any, db: Any, table: str) -> None:
    sink = make_sink()
    ok = make_record(1, variant="canary")
    failed = make_record(
        2, status="invalid_argument", http_status=400, error="bad input", outputs=None
    )
    sink.deliver([ok, failed])

    first, second = rows(db, table)
    assert first["id"] == "req-1" and first["model"] == "iris" and first["version"] == "2"
    assert first["service"] == "iris-svc" and first["variant"] == "canary"
    assert first["protocol"] == "v2" and first["status"] == "ok"
    assert first["http_status"] == 200 and first["error"] is None
    assert first["time"] == datetime.fromtimestamp(T0 + 1, UTC)
    assert first["latency_ms"] == 2.5
    assert first["request"] == request_json(ok)
    assert first["request"]["inputs"] == [
        {"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.5]}
    ]
    assert first["request"]["parameters"] == {"temperature": 0.5}
    assert first["response"] == response_json(ok)
    assert first["response"]["outputs"][0]["data"] == [1, 7]
    assert first["prediction"] == [1, 7]

    assert second["status"] == "invalid_argument" and second["http_status"] == 400
    assert second["error"] == "bad input"
    assert second["response"] == {
        "model_name": "iris", "model_version": "2", "id": "req-2", "error": "bad input",
        "status": 400,
    }  # fmt: skip
    assert second["prediction"] is None


def test_same_batch_twice_is_stored_once(make_sink: Any, db: Any, table: str) -> None:
    sink = make_sink()
    batch = [make_record(n) for n in range(5)]
    sink.deliver(batch)
    sink.deliver(batch)  # redelivered after a crash
    sink.deliver(batch[3:] + [make_record(5)])  # overlapping, plus one new
    stored = rows(db, table)
    assert [r["id"] for r in stored] == [f"req-{n}" for n in range(6)]
    # Same id, other model or other time: different inferences, all kept.
    sink.deliver([make_record(0, model="other"), make_record(0, time=T0 + 100)])
    (count,) = db.execute(f"SELECT count(*) FROM {table} WHERE id = 'req-0'").fetchone()
    assert count == 3


@pytest.mark.parametrize(
    ("mode", "has_request", "has_response"),
    [("all", True, True), ("request", True, False), ("response", False, True)],
)
def test_mode_leaves_the_other_half_null(
    make_sink: Any, db: Any, table: str, mode: str, has_request: bool, has_response: bool
) -> None:
    record = make_record(1)
    make_sink(mode=mode).deliver([record])
    (row,) = rows(db, table)
    assert row["request"] == (request_json(record) if has_request else None)
    assert row["response"] == (response_json(record) if has_response else None)
    assert row["prediction"] == [1, 7]  # the prediction column is kept in every mode


def test_nul_characters_are_replaced_not_refused(make_sink: Any, db: Any, table: str) -> None:
    """jsonb and text refuse NUL for good: such a record must not block the sink forever."""
    label = Tensor("label", "BYTES", np.array([b"a\x00b", b"back\\u0000slash"], dtype=object))
    record = make_record(
        1, id="req\x001", error="bad\x00", outputs=capture([label], frozenset(), 1 << 20)
    )
    make_sink().deliver([record])
    (row,) = rows(db, table)
    assert row["id"] == "req\ufffd1" and row["error"] == "bad\ufffd"
    assert row["prediction"] == ["a\ufffdb", "back\\u0000slash"]  # an escaped backslash stays


def test_outage_raises_then_reconnects(make_sink: Any, db: Any, table: str, postgres: Any) -> None:
    sink = make_sink()
    sink.deliver([make_record(0)])
    db.close()
    postgres.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            sink.deliver([make_record(1)])  # the open connection was terminated
        with pytest.raises(psycopg.OperationalError):
            sink.deliver([make_record(1)])  # no server to reconnect to
    finally:
        postgres.start()
    sink.deliver([make_record(1), make_record(2)])
    with psycopg.connect(postgres.dsn) as conn:
        assert [r["id"] for r in rows(conn, table)] == ["req-0", "req-1", "req-2"]
