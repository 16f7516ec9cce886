"""Model version states. Later issues add WARMING and DRAINING between these."""

from __future__ import annotations

from enum import StrEnum


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"
