"""``servekit.Transformer``: user code that runs before and after a service's predictor.

Typical use: turn a JSON record with named features into the tensor the model wants, and class
indices into label strings. Both hooks may be plain or ``async`` functions; the defaults pass the
request and response through unchanged.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from servekit.errors import InferenceError, ServekitError
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext

logger = logging.getLogger("servekit.deploy")


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


async def run_hook(transformer: Transformer, hook: str, owner: str, *args: Any) -> Any:
    """Run ``preprocess`` or ``postprocess`` (plain or async). The user's own exceptions become
    a clear 500, prefixed with ``owner`` when given (details only in the server log);
    ServekitErrors pass as raised, so a transformer can refuse bad input with a 400."""
    try:
        result = getattr(transformer, hook)(*args)
        if inspect.isawaitable(result):
            result = await result
    except ServekitError:
        raise
    except Exception as exc:
        logger.exception("transformer %s raised in %s", type(transformer).__name__, hook)
        prefix = f"{owner}: " if owner else ""
        raise InferenceError(
            f"{prefix}transformer {hook} failed: {type(exc).__name__} (details in the server log)"
        ) from exc
    return result
