"""Property-based requests from the api's own OpenAPI document (schemathesis): whatever the
body, path, query or headers, no operation answers a 5xx (SPEC E1: malformed input of any kind
is a 4xx from the catalog). The api runs in-process on its twins (tests/api_twins.py)."""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.metrics import ApiMetrics
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.ops import Probes, ops_app
from tests.api_twins import twin_gate
from tests.manage_twins import CommandsTwin

_registry = CollectorRegistry()
_metrics = ApiMetrics(_registry)
APP = build_http(
    twin_gate(_metrics),
    AuthzKeys(),
    _metrics,
    ops_app(_registry, Probes()),
    HttpOptions(commands=CommandsTwin()),
)
schema = schemathesis.openapi.from_asgi("/v0/openapi.json", APP)


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,  # the same examples every run: CI stays reproducible
)
def test_no_operation_answers_a_5xx(case: schemathesis.Case[Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer good"}):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
