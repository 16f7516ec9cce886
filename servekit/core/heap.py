"""Keep CPython's full garbage collections short in a serving process.

Why: a server with its frameworks and models loaded holds ~10^5 long-lived objects. Under load,
objects that are alive at a young collection (the requests in flight) are promoted, and every
few seconds that triggers a full collection, which rescans all of them with the event loop
stopped: about 100 ms on a small VM, every 3 s at a few thousand requests/s, and that is what
the tail latency shows. Moving what exists once a model is loaded into CPython's permanent
generation (``gc.freeze``) leaves full collections only what was made since (a few ms).

Frozen objects are still freed by reference counting; only reference cycles among them wait.
So an unload thaws everything, collects once (the one long pause, on a rare event) and
freezes again: an unloaded model's cycles do not leak.
"""

from __future__ import annotations

import gc


class HeapFreezer:
    """Called by the model loader after each load and unload; does nothing when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def after_load(self) -> None:
        if self.enabled:
            gc.collect()  # before the first freeze a full pass; after it, the young objects only
            gc.freeze()

    def after_unload(self) -> None:
        if self.enabled:
            gc.unfreeze()
            gc.collect()
            gc.freeze()


__all__ = ["HeapFreezer"]
