"""PostgreSQL: one row per inference, in the embedded store's layout, for SQL and BI tools.

Rows are keyed by (event id, model, time) and inserted with ON CONFLICT DO NOTHING, so a batch
delivered again after a crash is stored once. A broken connection makes ``deliver`` raise (the
batch is retried) and the next call reconnects.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from servekit.observe.payloads.config import PostgresSinkConfig
from servekit.observe.payloads.record import (
    InferenceRecord,
    first_values,
    request_json,
    response_json,
)
from servekit.observe.payloads.sinks import sink_name
from servekit.observe.payloads.sinks.base import RejectedEvents

CONNECT_TIMEOUT_SECONDS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    id text NOT NULL,
    model text NOT NULL,
    version text NOT NULL,
    service text NOT NULL,
    variant text NOT NULL,
    protocol text NOT NULL,
    time timestamptz NOT NULL,
    latency_ms double precision NOT NULL,
    status text NOT NULL,
    http_status integer NOT NULL,
    error text,
    request jsonb,
    response jsonb,
    prediction jsonb,
    UNIQUE (id, model, time)
)
"""
INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (model, version, time)"
INSERT = (
    "INSERT INTO {table} (id, model, version, service, variant, protocol, time, latency_ms, "
    "status, http_status, error, request, response, prediction) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)

# A JSON \u0000 escape not itself escaped (preceded by an even number of backslashes).
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _dumps(value: Any) -> bytes:
    """orjson, with NUL characters (which jsonb refuses for good) replaced by U+FFFD."""
    text = orjson.dumps(value)
    return _JSON_NUL.sub(rb"\1\\ufffd", text) if b"\\u0000" in text else text


def _text(value: str | None) -> str | None:
    """Text columns refuse NUL too; ids and error messages come from clients and models."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


class PostgresSink:
    def __init__(self, config: PostgresSinkConfig) -> None:
        self.name = sink_name(config)
        self.options = config
        table = sql.Identifier(config.table)
        self._schema = sql.SQL(SCHEMA).format(table=table)
        self._index = sql.SQL(INDEX).format(
            index=sql.Identifier(f"{config.table}_by_model"), table=table
        )
        self._insert = sql.SQL(INSERT).format(table=table)
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (the table created if missing)."""
        if self._conn is not None and not (self._conn.closed or self._conn.broken):
            return self._conn
        self.close()
        params = conninfo_to_dict(self.options.dsn)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)  # an unreachable host
        conn = psycopg.connect(**params, autocommit=False)
        try:
            with conn.transaction():
                conn.execute(self._schema)
                conn.execute(self._index)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def deliver(self, records: list[InferenceRecord]) -> None:
        conn = self._connection()
        try:
            rows = [self._row(r) for r in records]
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(self._insert, rows)
        except (psycopg.DataError, orjson.JSONEncodeError, UnicodeError) as exc:
            # A value Postgres (or JSON) refuses: the same batch would fail forever.
            raise RejectedEvents(f"{type(exc).__name__}: {exc}") from exc
        # Any other error propagates (retry); a broken connection is replaced on the next call.

    def _row(self, r: InferenceRecord) -> tuple[Any, ...]:
        mode = self.options.mode
        prediction = first_values(r.outputs)
        return (
            _text(r.id), r.model, r.version, r.service, r.variant, r.protocol,
            datetime.fromtimestamp(r.time, UTC), r.latency_ms, r.status, r.http_status,
            _text(r.error),
            Jsonb(request_json(r), _dumps) if mode != "response" else None,
            Jsonb(response_json(r), _dumps) if mode != "request" else None,
            Jsonb(prediction, _dumps) if prediction is not None else None,
        )  # fmt: skip

    def close(self) -> None:
        """Close quietly: a connection to a server that is gone cannot be closed cleanly."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
