"""Deployments management API: list services and graphs, change rollouts live.

GET  /v2/deployments                       every deployment, and the last rejected edit
GET  /v2/deployments/{name}                one: variants, traffic, learnt bandit state
POST /v2/deployments/{name}/rollout        {"traffic_percent": N} sets the canary's share
POST /v2/deployments/{name}/promote        the canary becomes the predictor
POST /v2/deployments/{name}/rollback       the canary is dropped

All need the admin token when one is set, as the model control API does.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.deploy.manager import DeploymentManager
from servekit.errors import InvalidInput, NotFound
from servekit.transports.http.codecs import loads
from servekit.transports.http.repository import bearer_token
from servekit.transports.http.v2 import dataplane_of, json_response

WHAT = "the deployments API"


def _manager(request: Request) -> DeploymentManager:
    dataplane = dataplane_of(request)
    dataplane.check_admin(bearer_token(request), WHAT)
    if dataplane.deployments is None:
        raise NotFound("this server serves no deployments (see the 'deployments' setting)")
    return dataplane.deployments


async def list_deployments(request: Request) -> Response:
    return json_response(_manager(request).describe())


async def get_deployment(request: Request) -> Response:
    return json_response(_manager(request).describe_one(request.path_params["name"]))


async def rollout(request: Request) -> Response:
    manager = _manager(request)
    body = await request.body()
    document = loads(body) if body.strip() else {}
    percent = document.get("traffic_percent") if isinstance(document, dict) else None
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
    ):
        raise InvalidInput('body must be {"traffic_percent": <number from 0 to 100>}')
    return json_response(manager.rollout(request.path_params["name"], "set", float(percent)))


async def promote(request: Request) -> Response:
    return json_response(_manager(request).rollout(request.path_params["name"], "promote"))


async def rollback(request: Request) -> Response:
    return json_response(_manager(request).rollout(request.path_params["name"], "rollback"))


routes = [
    Route("/v2/deployments", list_deployments, methods=["GET"]),
    Route("/v2/deployments/{name}", get_deployment, methods=["GET"]),
    Route("/v2/deployments/{name}/rollout", rollout, methods=["POST"]),
    Route("/v2/deployments/{name}/promote", promote, methods=["POST"]),
    Route("/v2/deployments/{name}/rollback", rollback, methods=["POST"]),
]
