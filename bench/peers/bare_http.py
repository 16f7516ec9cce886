"""Ceiling: bare Starlette + uvicorn; parses the V2 JSON body, returns a fixed reply.

python bench/peers/bare_http.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPLY = orjson.dumps(
    {
        "model_name": "bare",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}],
    }
)


async def infer(request: Request) -> Response:
    document = orjson.loads(await request.body())
    if not document["inputs"][0]["data"]:
        return Response(b'{"error": "no data"}', status_code=400)
    return Response(REPLY, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"", status_code=200)


app = Starlette(
    routes=[
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
