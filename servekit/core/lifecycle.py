"""Model version states: LOADING -> READY -> DRAINING -> UNLOADED, or FAILED."""

from __future__ import annotations

from enum import StrEnum


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    DRAINING = "DRAINING"
    """Takes no new requests; finishing the ones it has before it is unloaded."""
    UNLOADED = "UNLOADED"
