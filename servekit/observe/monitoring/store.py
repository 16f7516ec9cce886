"""Detector results as a time series, and flagged outliers, in an embedded SQLite file.

Its own file next to the payload store (``monitoring.sqlite``): results are written by the
monitoring thread and read by the API, and old rows go after the payload log's retention.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    detector TEXT NOT NULL,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    alarm INTEGER NOT NULL,
    statistic REAL,
    p_value REAL,
    threshold REAL,
    window_size INTEGER NOT NULL,
    features TEXT,
    vals TEXT
);
CREATE INDEX IF NOT EXISTS results_by_model ON results (model, detector, time);
CREATE TABLE IF NOT EXISTS outliers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    detector TEXT NOT NULL,
    id TEXT NOT NULL,
    time REAL NOT NULL,
    score REAL NOT NULL,
    inline INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outliers_by_model ON outliers (model, time);
"""

_COLUMNS = (
    "model", "detector", "kind", "time", "alarm", "statistic", "p_value", "threshold",
    "window_size", "features", "vals",
)  # fmt: skip


def result_dict(result: Any, when: float) -> dict[str, Any]:
    """A DetectorResult as JSON-ready data: plain Python numbers, features as objects."""
    data = _plain(asdict(result))
    data["time"] = when
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars
        return value.item()
    return value


class ResultStore:
    def __init__(self, path: Path, retention_seconds: float = 7 * 86400.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._last_prune = 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_results(self, model: str, results: list[dict[str, Any]]) -> None:
        rows = [
            (
                model, r["detector"], r["kind"], r["time"], int(r["alarm"]), r["statistic"],
                r["p_value"], r["threshold"], r["window_size"],
                orjson.dumps(r["features"]).decode() if r["features"] else None,
                orjson.dumps(r["values"]).decode() if r["values"] else None,
            )
            for r in results
        ]  # fmt: skip
        with self._lock:
            self._db.executemany(
                f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 11)})", rows
            )
        self._prune()

    def add_outliers(self, model: str, rows: list[tuple[str, str, float, float, bool]]) -> None:
        """(detector, event id, time, score, inline) per flagged row."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO outliers (model, detector, id, time, score, inline) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(model, d, i, t, s, int(inline)) for d, i, t, s, inline in rows],
            )

    def history(
        self, model: str, detector: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Results of ``model``, newest first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM results WHERE model = ?"
        args: list[Any] = [model]
        if detector is not None:
            sql += " AND detector = ?"
            args.append(detector)
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        sql += " ORDER BY time DESC, seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        results = []
        for row in rows:
            item = dict(zip(_COLUMNS, row, strict=True))
            item["alarm"] = bool(item["alarm"])
            item["features"] = orjson.loads(item["features"]) if item["features"] else []
            item["values"] = orjson.loads(item.pop("vals")) if item["vals"] else {}
            del item["model"]
            results.append(item)
        return results

    def outliers(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT detector, id, time, score, inline FROM outliers WHERE model = ? "
                "ORDER BY seq DESC LIMIT ?",
                (model, limit),
            ).fetchall()
        return [
            {"detector": d, "id": i, "time": t, "score": s, "inline": bool(n)}
            for d, i, t, s, n in rows
        ]

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        cutoff = now - self.retention_seconds
        with self._lock:
            self._db.execute("DELETE FROM results WHERE time < ?", (cutoff,))
            self._db.execute("DELETE FROM outliers WHERE time < ?", (cutoff,))


__all__ = ["ResultStore", "result_dict"]
