"""The embedded store as a sink: batches of records into SQLite, with retention."""

from __future__ import annotations

import time

from servekit.observe.payloads.config import SinkOptions, StoreConfig
from servekit.observe.payloads.record import InferenceRecord, decode
from servekit.observe.payloads.store import PayloadStore

RETENTION_EVERY_SECONDS = 30.0


class StoreSink:
    name = "store"

    def __init__(self, store: PayloadStore, config: StoreConfig) -> None:
        self._store = store
        self._config = config
        self.options = SinkOptions(
            name="store",
            mode=config.mode,
            sample_rate=config.sample_rate,
            batch_size=config.batch_size,
            linger_seconds=config.linger_seconds,
        )
        self._next_retention = 0.0

    def open(self) -> None:
        self._retention()

    def deliver(self, records: list[InferenceRecord]) -> None:
        self._store.insert(records, self.options.mode)
        self._maybe_retention()

    def deliver_encoded(self, payloads: list[bytes]) -> None:
        if self.options.mode != "all":
            self.deliver([decode(p) for p in payloads])
            return
        self._store.insert_encoded(payloads)
        self._maybe_retention()

    def _maybe_retention(self) -> None:
        if time.monotonic() >= self._next_retention:
            self._retention()

    def _retention(self) -> None:
        self._store.apply_retention(self._config.retention_seconds, self._config.retention_bytes)
        self._next_retention = time.monotonic() + RETENTION_EVERY_SECONDS

    def close(self) -> None:
        self._store.close()
