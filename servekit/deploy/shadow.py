"""Shadow (mirror) traffic: a copy of a request goes to a candidate; its answer is logged, never
returned. Fire-and-forget with a bound on copies in flight: over the bound a copy is dropped and
counted, so a slow candidate can never slow the real traffic down."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

from prometheus_client import CollectorRegistry, Counter

from servekit.deploy.base import Invoke
from servekit.types.inference import InferenceRequest, RequestContext

logger = logging.getLogger("servekit.deploy.shadow")

SHADOW_VARIANT = "shadow"


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.copies = Counter(
            "servekit_shadow_requests",
            "Shadow copies by service and outcome (ok, error, dropped: too many in flight).",
            ["service", "outcome"],
            registry=registry,
        )


class ShadowMirror:
    def __init__(
        self,
        service: str,
        model: str,
        version: str | None,
        percent: float,
        metrics: ShadowMetrics,
        max_in_flight: int = 64,
    ) -> None:
        self.service, self.model, self.version = service, model, version
        self.percent = percent
        self._metrics = metrics
        self._max = max_in_flight
        self._tasks: set[asyncio.Task] = set()
        self._rng = random.Random()

    def maybe_mirror(
        self, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> None:
        """Start a copy (sampled by ``percent``); returns at once."""
        if self.percent < 100 and self._rng.random() * 100 >= self.percent:
            return
        if len(self._tasks) >= self._max:
            self._metrics.copies.labels(self.service, "dropped").inc()
            return
        copy_context = dataclasses.replace(
            context,
            request_id=f"{context.request_id}-shadow",
            headers=dict(context.headers),
            service=self.service,
            variant=SHADOW_VARIANT,
        )
        copy = dataclasses.replace(request, id=copy_context.request_id)
        task = asyncio.get_running_loop().create_task(self._run(copy, copy_context, invoke))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> None:
        try:
            await invoke(self.model, self.version, request, context)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is only ever counted/logged
            self._metrics.copies.labels(self.service, "error").inc()
            logger.info("shadow %s of service %s failed: %s", self.model, self.service, exc)
        else:
            self._metrics.copies.labels(self.service, "ok").inc()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)
