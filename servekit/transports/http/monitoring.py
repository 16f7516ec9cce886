"""GET /v2/models/{name}/monitoring: the monitors' current state over REST."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.errors import InvalidInput, Unavailable
from servekit.transports.http.v2 import json_response


async def monitoring_state(request: Request) -> Response:
    """Per detector its last result, which features drifted, firing alerts, recent history
    (``?history=N`` results, default 20) and recently flagged outliers."""
    monitor = request.app.state.monitor
    if monitor is None:
        raise Unavailable("monitoring needs the payload log (payload_log.enabled)")
    raw = request.query_params.get("history", "20")
    try:
        history = int(raw)
    except ValueError:
        raise InvalidInput("history must be an integer") from None
    if not 0 <= history <= 1000:
        raise InvalidInput("history must be between 0 and 1000")
    state = await asyncio.to_thread(monitor.state, request.path_params["name"], history)
    return json_response(state)


routes = [Route("/v2/models/{name}/monitoring", monitoring_state, methods=["GET"])]
