"""Lower the scheduling priority of grpc.aio's poller thread (``grpc_poller_nice``).

grpc.aio runs one thread that waits on gRPC core's completion queue and, with the long-standing
listener, also reads and writes the sockets; it wakes for every packet. On a server whose cores
are all busy, each wake-up preempts the event loop, so every call costs several context
switches and the loop's caches go cold between them. At a lower priority the poller mostly runs
when the event loop waits, and hands it many calls at once: +34-36 % calls per second for the tiny
model without batching on one core, but fewer with adaptive batching (README, "Performance").
Off by default. Linux only: there a thread's niceness is its own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("servekit.grpc")

POLLER_THREAD_TARGET = "_poll_wrapper"
"""Part of the name grpc.aio gives its poller thread (``Thread-N (_poll_wrapper)``)."""


def lower_poller_priority(nice: int) -> list[int]:
    """Set grpc.aio's poller thread(s) to niceness ``nice``; returns their thread ids.

    Call it after the server has started (the thread exists from then on)."""
    if nice <= 0:
        return []
    if sys.platform != "linux":
        logger.info("grpc_poller_nice applies on Linux only; left as it is")
        return []
    changed = []
    for thread in threading.enumerate():
        if POLLER_THREAD_TARGET in thread.name and thread.native_id is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, thread.native_id, nice)
            except OSError as exc:
                logger.warning("could not lower the gRPC poller's priority: %s", exc)
                continue
            changed.append(thread.native_id)
    if changed:
        logger.info("gRPC poller thread %s at nice %d", ", ".join(map(str, changed)), nice)
    else:
        logger.warning("grpc_poller_nice: no grpc.aio poller thread found; this grpcio differs")
    return changed
