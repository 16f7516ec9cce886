"""Worker processes: serve one model from N processes that share one loaded copy of it.

``WorkerPoolRuntime`` wraps a runtime with the Runtime interface (see ``pool``); a zygote process
loads the model once and forks the workers (``zygote``); tensors cross in shared memory
(``channel``).
"""

from __future__ import annotations

import os

from servekit.workers.pool import WorkerPoolRuntime


def default_instances() -> int:
    """One worker per CPU this process may run on (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


__all__ = ["WorkerPoolRuntime", "default_instances"]
