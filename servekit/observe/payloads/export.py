"""Logged events as a Parquet file, for retraining (needs pyarrow: servekit[parquet])."""

from __future__ import annotations

import io
from typing import Any

import orjson

from servekit.errors import Unavailable

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
_JSON_COLUMNS = ("request", "response", "prediction", "truth")


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    """One row per inference; request, response, prediction and truth as JSON text."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Unavailable("Parquet export needs pyarrow: pip install 'servekit[parquet]'") from None
    columns: dict[str, list[Any]] = {
        "id": [], "model": [], "version": [], "service": [], "variant": [], "protocol": [],
        "time": [], "latency_ms": [], "status": [], "http_status": [], "error": [],
        "request": [], "response": [], "prediction": [], "truth": [], "reward": [],
    }  # fmt: skip
    for row in rows:
        for key, values in columns.items():
            value = row.get(key)
            if key in _JSON_COLUMNS and value is not None:
                value = orjson.dumps(value).decode()
            values.append(value)
    schema = pa.schema(
        [
            *((name, pa.string()) for name in ("id", "model", "version", "service", "variant")),
            ("protocol", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
            ("latency_ms", pa.float64()),
            ("status", pa.string()),
            ("http_status", pa.int32()),
            ("error", pa.string()),
            *((name, pa.string()) for name in _JSON_COLUMNS),
            ("reward", pa.float64()),
        ]
    )
    columns["time"] = [int(t * 1_000_000) for t in columns["time"]]
    table = pa.table(columns, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
