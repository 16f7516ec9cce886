"""The REST application: the route table, error handlers, metrics, OpenAPI and docs."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from servekit.core.dataplane import DataPlane
from servekit.errors import ServekitError
from servekit.observe.feedback import FeedbackService
from servekit.observe.metrics import Metrics
from servekit.observe.monitoring.service import MonitorService
from servekit.settings import Settings
from servekit.transports.http import deploy, monitoring, observe, repository, v1, v2
from servekit.transports.http.asgi import InferenceASGI
from servekit.transports.http.errors import (
    http_exception_handler,
    servekit_error_handler,
    unexpected_error_handler,
)


@cache
def openapi_document() -> dict:
    text = resources.files("servekit.transports.http").joinpath("openapi.yaml").read_text()
    return yaml.safe_load(text)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


async def openapi(request: Request) -> Response:
    return v2.json_response(openapi_document())


async def docs(request: Request) -> Response:
    page = resources.files("servekit.transports.http").joinpath("docs.html").read_text()
    return HTMLResponse(page)


def create_app(
    dataplane: DataPlane,
    metrics_registry: Metrics,
    settings: Settings,
    feedback: FeedbackService,
    monitor: MonitorService | None = None,
) -> InferenceASGI:
    """Inference POSTs on the short path, the rest through Starlette."""
    app = Starlette(
        routes=[
            *v2.routes,
            *v1.routes,
            *(repository.routes if settings.management_api else []),
            *observe.routes,
            *monitoring.routes,
            *deploy.routes,
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
        ],
        exception_handlers={
            ServekitError: servekit_error_handler,
            HTTPException: http_exception_handler,
            Exception: unexpected_error_handler,
        },
    )
    app.state.dataplane = dataplane
    app.state.metrics = metrics_registry
    app.state.settings = settings
    app.state.feedback = feedback
    app.state.monitor = monitor
    return InferenceASGI(app, dataplane, settings.max_request_bytes)
