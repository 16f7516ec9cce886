"""Which of gRPC core's two connection listeners the server uses; decided before grpc loads.

Since grpcio 1.80 a Python server accepts and reads its connections on EventEngine threads by
default (the ``event_engine_listener`` experiment), which hands every call between threads
on the way in. gRPC core's long-standing listener reads them on the completion-queue thread
that grpc.aio already polls from. On one core with a tiny model, a bare grpc.aio server
answered 15-25 % more calls per second on it and servekit with batching 13-17 % more (README,
"Performance"). Behaviour on the wire is the same.

gRPC reads ``GRPC_EXPERIMENTS`` once, when ``grpc`` is imported: this module must not import it,
and ``choose_listener`` must run first. A value the operator set is never changed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

logger = logging.getLogger("servekit.grpc")

EXPERIMENTS_ENV = "GRPC_EXPERIMENTS"
LEGACY_LISTENER = "-event_engine_listener"


def choose_listener(
    legacy: bool,
    environ: MutableMapping[str, str] = os.environ,
    grpc_loaded: bool | None = None,
) -> str:
    """Ask gRPC core for its long-standing listener when ``legacy`` and nobody else decided;
    returns what was done, for the start-up log."""
    if grpc_loaded is None:
        grpc_loaded = "grpc" in sys.modules
    if not legacy:
        return "gRPC listener: grpcio's default"
    if EXPERIMENTS_ENV in environ:
        return f"gRPC listener: {EXPERIMENTS_ENV}={environ[EXPERIMENTS_ENV]!r} as set"
    if grpc_loaded:
        logger.warning(
            "grpc was imported before the server started, so grpc_legacy_listener cannot take "
            "effect; set %s=%s before starting Python instead",
            EXPERIMENTS_ENV,
            LEGACY_LISTENER,
        )
        return "gRPC listener: grpcio's default (grpc was already loaded)"
    environ[EXPERIMENTS_ENV] = LEGACY_LISTENER
    return f"gRPC listener: gRPC core's long-standing one ({EXPERIMENTS_ENV}={LEGACY_LISTENER})"
