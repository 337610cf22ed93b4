"""A server with the api's edge protocol for tests/unit/test_paused_edge.py, in a process of its
own (the test stops and continues it): `python -m tests.unit.paused_edge_server PORT`. Head
timeout and keep-alive 1 s."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from authbus_api.http.errors import ErrorStyle
from authbus_api.http.limits import EdgeLimits
from authbus_api.http.server import edge_protocol

app = FastAPI()


@app.get("/ping")
async def ping() -> PlainTextResponse:
    return PlainTextResponse("pong")


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http=edge_protocol(EdgeLimits(header_timeout_s=1.0), ErrorStyle()),
        timeout_keep_alive=1,
        log_config=None,
        lifespan="off",
    )
