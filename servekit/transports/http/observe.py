"""Feedback, live performance and the payload log query over REST."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.errors import InvalidInput, Unavailable
from servekit.observe.feedback import FeedbackService
from servekit.observe.payloads.export import PARQUET_MEDIA_TYPE, to_parquet
from servekit.observe.payloads.store import LogQuery
from servekit.observe.timeparse import parse_time
from servekit.transports.http.codecs import loads
from servekit.transports.http.repository import bearer_token
from servekit.transports.http.v2 import dataplane_of, json_response


def _feedback(request: Request) -> FeedbackService:
    return request.app.state.feedback


async def feedback(request: Request) -> Response:
    """POST /v2/models/{name}/feedback: ground truth (and/or a reward) for a logged request."""
    document = loads(await request.body())
    result = await _feedback(request).submit(
        request.path_params["name"], document, request.headers.get("x-request-id")
    )
    return json_response(result)


async def performance(request: Request) -> Response:
    """GET /v2/models/{name}/performance[?baseline=V&candidate=V]"""
    params = request.query_params
    report = await _feedback(request).performance(
        request.path_params["name"], params.get("baseline"), params.get("candidate")
    )
    return json_response(report)


async def logs(request: Request) -> Response:
    """GET /v2/logs: search the payload store (admin token when one is set)."""
    dataplane = dataplane_of(request)
    dataplane.check_admin(bearer_token(request), "the payload log")
    payload_log = dataplane.payload_log
    if payload_log is None or payload_log.store is None:
        raise Unavailable("the payload store is off (payload_log.store.enabled)")
    query = log_query(dict(request.query_params))
    rows = await asyncio.to_thread(payload_log.store.query, query)
    if request.query_params.get("format", "json") == "parquet":
        return Response(await asyncio.to_thread(to_parquet, rows), media_type=PARQUET_MEDIA_TYPE)
    return json_response({"count": len(rows), "events": rows})


_FILTERS = ("model", "version", "id", "prediction", "status")


def log_query(params: dict[str, Any]) -> LogQuery:
    unknown = set(params) - {*_FILTERS, "since", "until", "limit", "format"}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    if params.get("format", "json") not in ("json", "parquet"):
        raise InvalidInput("format is 'json' or 'parquet'")
    query = LogQuery(**{k: params[k] for k in _FILTERS if params.get(k)})
    if params.get("since"):
        query.since = parse_time(params["since"])
    if params.get("until"):
        query.until = parse_time(params["until"])
    if params.get("limit"):
        try:
            query.limit = int(params["limit"])
        except ValueError:
            raise InvalidInput("limit must be an integer") from None
    return query


routes = [
    Route("/v2/models/{name}/feedback", feedback, methods=["POST"]),
    Route("/v2/models/{name}/performance", performance, methods=["GET"]),
    Route("/v2/logs", logs, methods=["GET"]),
]
