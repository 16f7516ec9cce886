"""``servekit.Transformer``: user code that runs before and after a service's predictor.

Typical use: turn a JSON record with named features into the tensor the model wants, and class
indices into label strings. Both hooks may be plain or ``async`` functions; the defaults pass the
request and response through unchanged.
"""

from __future__ import annotations

from typing import Any

from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext


class Transformer:
    """Override ``preprocess`` and/or ``postprocess``; ``options`` come from the spec."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def preprocess(self, request: InferenceRequest, context: RequestContext) -> InferenceRequest:
        """Return the request the predictor receives (may be ``async``)."""
        return request

    def postprocess(
        self,
        response: InferenceResponse,
        request: InferenceRequest,
        context: RequestContext,
    ) -> InferenceResponse:
        """Return the response the client receives (may be ``async``)."""
        return response
