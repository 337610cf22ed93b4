"""Forward auth's hot path at the ASGI level (issue #5 item 9): a credential in the verdict
cache is answered without the framework; anything else goes on to it, with the same answer."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from authbus_api.app import FORWARD_AUTH, fast_forward_auth
from authbus_api.metrics import ApiMetrics
from authbus_api.routes import RouteConfig, RouteTable
from authbus_shared.ops import Message, Receive, Scope, Send
from tests.api_twins import twin_gate


class Framework:
    """Stands for the FastAPI app: records that it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(app: Any, headers: dict[str, str], path: str = FORWARD_AUTH) -> Message:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]


@pytest.fixture
def gate() -> Any:
    return twin_gate(ApiMetrics(CollectorRegistry()))


async def test_a_cached_credential_is_answered_without_the_framework(gate: Any) -> None:
    framework = Framework()
    app = fast_forward_auth(framework, gate)
    await gate.authenticate("Bearer good")  # seen recently: in the verdict cache

    start = await call(app, {"Authorization": "Bearer good", "X-Original-URI": "/any/path"})

    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 200
    assert framework.calls == 0
    assert headers["x-authbus-account-id"] == "acc-1"
    assert headers["ratelimit-policy"] == '"global";q=60;w=60'


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"Authorization": "Bearer good"}, FORWARD_AUTH),  # not in the cache yet
        ({}, FORWARD_AUTH),  # no credential: 401 by the framework
        ({"Authorization": "Bearer good"}, "/v0/me"),  # not forward auth
    ],
)
async def test_everything_else_goes_to_the_framework(
    gate: Any, headers: dict[str, str], path: str
) -> None:
    framework = Framework()

    start = await call(fast_forward_auth(framework, gate), headers, path)

    assert (start["status"], framework.calls) == (299, 1)


async def test_a_declared_route_the_caller_may_not_use_takes_the_slow_path(gate: Any) -> None:
    """403 / 418 come from the framework, in the catalog's words."""
    table = RouteTable(
        [
            RouteConfig.model_validate(r)
            for r in (
                {"path": "/admin", "methods": ["GET"], "upstream": "http://u", "scopes": ["admin"]},
                {"path": "/soon", "methods": ["GET"], "upstream": "http://u", "released": False},
                {"path": "/open", "methods": ["GET"], "upstream": "http://u"},
            )
        ]
    )
    framework = Framework()
    app = fast_forward_auth(framework, gate, table)
    await gate.authenticate("Bearer good")

    statuses = [
        (await call(app, {"Authorization": "Bearer good", "X-Original-URI": uri}))["status"]
        for uri in ("/admin", "/soon", "/open")
    ]

    assert statuses == [299, 299, 200]
