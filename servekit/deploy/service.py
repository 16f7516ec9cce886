"""A service: predictor (+ canary or experiment variants), optional transformer and shadow.

One ``Service`` object is immutable in its routing shape; a rollout change builds a new one and
swaps it in (requests in flight finish on the old one), carrying the router's learnt state over.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from servekit.deploy.base import Invoke
from servekit.deploy.routers import Router
from servekit.deploy.shadow import ShadowMirror
from servekit.deploy.spec import VARIANT_HEADER, ServiceSpec
from servekit.deploy.transformer import Transformer, run_hook
from servekit.errors import InvalidInput, ModelNotFound
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext

logger = logging.getLogger("servekit.deploy")

REMEMBERED_IDS = 100_000
"""Request ids a learning router remembers (id -> variant) so feedback rewards the right arm."""


@dataclass(slots=True, frozen=True)
class Variant:
    name: str
    model: str
    version: str | None


def variants_of(spec: ServiceSpec) -> list[Variant]:
    if spec.experiment is not None:
        return [Variant(v.name, v.model, v.version) for v in spec.experiment.variants]
    assert spec.predictor is not None
    found = [Variant("predictor", spec.predictor.model, spec.predictor.version)]
    if spec.canary is not None:
        found.append(Variant("canary", spec.canary.model, spec.canary.version))
    return found


def split_weights(spec: ServiceSpec) -> dict[str, float]:
    """Router weights: experiment weights, or predictor/canary percentages (pinned: 0 %)."""
    if spec.experiment is not None:
        return {v.name: v.weight for v in spec.experiment.variants}
    canary = spec.canary
    percent = 0.0 if canary is None or canary.pinned else canary.traffic_percent
    return {"predictor": 100.0 - percent, **({"canary": percent} if canary else {})}


class Service:
    """Implements ``servekit.deploy.base.Deployment``."""

    def __init__(
        self,
        spec: ServiceSpec,
        router: Router,
        transformer: Transformer | None = None,
        shadow: ShadowMirror | None = None,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.router = router
        self.transformer = transformer
        self.shadow = shadow
        self.variants = {v.name: v for v in variants_of(spec)}
        self._sticky_header = spec.sticky.header if spec.sticky else None
        self._sticky = spec.sticky is not None
        self._learns = bool(getattr(router, "learns", False))
        self._served: OrderedDict[str, str] = OrderedDict()
        self._owner = f"service '{spec.name}'"

    def targets(self) -> set[str]:
        return self.serving_targets() | ({self.shadow.model} if self.shadow else set())

    def serving_targets(self) -> set[str]:
        """What answers clients (a shadow's readiness never makes the service unready)."""
        return {v.model for v in self.variants.values()}

    def signature_model(self) -> tuple[str, str | None] | None:
        """The model whose tensors clients send, when no transformer reshapes them."""
        if self.transformer is not None:
            return None
        first = next(iter(self.variants.values()))
        return first.model, first.version

    def routing_headers(self) -> set[str]:
        return {self._sticky_header} if self._sticky_header else set()

    def choose(self, version: str | None, context: RequestContext) -> Variant:
        """Header, then explicit model version, then the router (sticky when configured)."""
        asked = context.headers.get(VARIANT_HEADER)
        if asked:
            variant = self.variants.get(asked.strip())
            if variant is None:
                raise InvalidInput(
                    f"service '{self.name}' has no variant '{asked}' "
                    f"(header {VARIANT_HEADER}; variants: {sorted(self.variants)})"
                )
            return variant
        if version:
            for variant in self.variants.values():
                if variant.version == version:
                    return variant
            raise ModelNotFound(self.name, version)
        key = None
        if self._sticky:
            key = (
                context.headers.get(self._sticky_header) if self._sticky_header else None
            ) or context.request_id
        return self.variants[self.router.choose(key)]

    async def infer(
        self,
        version: str | None,
        request: InferenceRequest,
        context: RequestContext,
        invoke: Invoke,
    ) -> InferenceResponse:
        variant = self.choose(version, context)
        headers = context.headers
        if VARIANT_HEADER in headers:  # it picked this service's variant, not a nested one's
            headers = {k: v for k, v in headers.items() if k != VARIANT_HEADER}
        context.chosen_variant = variant.name
        child = dataclasses.replace(
            context, headers=headers, service=self.name, variant=variant.name, chosen_variant=None
        )
        if self._learns and context.request_id:
            self._remember(context.request_id, variant.name)
        if self.transformer is not None:
            request = await run_hook(self.transformer, "preprocess", self._owner, request, child)
        if self.shadow is not None:
            self.shadow.maybe_mirror(request, child, invoke)
        response = await invoke(variant.model, variant.version, request, child)
        served = response.model_name, response.model_version
        if self.transformer is not None:
            response = await run_hook(
                self.transformer, "postprocess", self._owner, response, request, child
            )
            response.model_name, response.model_version = served
        context.request_id = child.request_id
        return response

    def _remember(self, request_id: str, variant: str) -> None:
        self._served[request_id] = variant
        if len(self._served) > REMEMBERED_IDS:
            self._served.popitem(last=False)

    def reward(self, request_id: str, value: float) -> bool:
        """Credit the arm that served ``request_id``; False when this service did not."""
        variant = self._served.pop(request_id, None)
        if variant is None:
            return False
        self.router.reward(variant, value)
        return True

    def adopt(self, previous: Service) -> None:
        """Keep the request ids a replaced version of this service served (feedback may come
        after a rollout or an edit)."""
        if self._learns:
            self._served = previous._served

    def describe(self) -> dict[str, Any]:
        weights = split_weights(self.spec)
        total = sum(weights.values()) or 1.0
        out: dict[str, Any] = {
            "name": self.name,
            "kind": "service",
            "strategy": self.spec.experiment.strategy if self.spec.experiment else "canary",
            "variants": [
                {
                    "name": v.name,
                    "model": v.model,
                    "version": v.version,
                    "traffic_percent": round(100.0 * weights.get(v.name, 0.0) / total, 6),
                }
                for v in self.variants.values()
            ],
            "spec": self.spec.model_dump(by_alias=True, exclude_none=True),
        }
        if getattr(self.router, "learns", False):
            out["router_state"] = self.router.state()
        if self.shadow is not None:
            out["shadow"] = {"model": self.shadow.model, "version": self.shadow.version}
        return out
