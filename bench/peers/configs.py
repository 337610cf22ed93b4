"""What each server of the comparison is given, rendered from the run's facts (pure: files are
written by the caller): authbus's routes and policies, Oathkeeper's config and access rule,
gubernator's environment and request body, and the tampered token every verifier must
refuse."""

from __future__ import annotations

import base64
import json
from typing import Any

RESOURCE = "/v1/things/42"  # what every verifier is asked about
SCOPE = "read"  # what the route needs and the token grants
LIMIT = 100_000_000  # per account (authbus) or per key (gubernator): nothing refused here
WINDOW_S = 3600

AUTHBUS_ROUTES = f"""
[[route]]
path = "/v1/things/{{id}}"
methods = ["GET"]
upstream = "http://127.0.0.1:9"  # never called: forward auth only answers
scopes = ["{SCOPE}"]
"""

AUTHBUS_POLICIES = f"""
[[policy]]
name = "global"
scope = "account"
limit = {LIMIT}
window_s = {WINDOW_S}
lockout_s = 60
"""


def forward_auth_headers(token: str) -> dict[str, str]:
    """nginx's auth_request dialect: the original method and URI in headers."""
    return {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "GET",
        "X-Original-URI": RESOURCE,
    }


def tampered(token: str) -> str:
    """`token` with the first character of its signature changed: the same header and claims,
    a signature that no longer verifies. (The first, not the last: the last base64url
    character of a 64-byte ES256 signature carries padding bits, and a lenient decoder may
    read a changed one as the same bytes.)"""
    head, _, signature = token.rpartition(".")
    if not head or not signature:
        raise ValueError("not a JWS compact token")
    first = "B" if signature[0] == "A" else "A"
    return f"{head}.{first}{signature[1:]}"


def claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (to give Oathkeeper the same issuer and audience)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def oathkeeper_rules(api_port: int) -> list[dict[str, Any]]:
    """One access rule for `GET RESOURCE` as `/decisions` sees it (the host is the one the
    decision API was asked on): jwt, then allow, then noop."""
    return [
        {
            "id": "bench-things",
            "match": {
                "url": f"http://127.0.0.1:{api_port}/v1/things/<[0-9]+>",
                "methods": ["GET"],
            },
            "authenticators": [{"handler": "jwt"}],
            "authorizer": {"handler": "allow"},
            "mutators": [{"handler": "noop"}],
        }
    ]


def oathkeeper_config(
    *, ports: dict[str, int], rules_url: str, jwks_url: str, token_claims: dict[str, Any]
) -> dict[str, Any]:
    """Oathkeeper v0.40.9's config (`.schema/config.schema.json`): the jwt authenticator
    checks what authbus checks of a token (ES256 with a kid from the JWKS, issuer, audience,
    the scope), the logs at warn (as authbus, no line per request)."""
    audience = token_claims["aud"]
    return {
        "log": {"level": "warn", "format": "json"},
        "serve": {
            "api": {"host": "127.0.0.1", "port": ports["api"]},
            "proxy": {"host": "127.0.0.1", "port": ports["proxy"]},
            "prometheus": {"host": "127.0.0.1", "port": ports["prometheus"]},
        },
        "access_rules": {"repositories": [rules_url]},
        "authenticators": {
            "jwt": {
                "enabled": True,
                "config": {
                    "jwks_urls": [jwks_url],
                    "allowed_algorithms": ["ES256"],
                    "trusted_issuers": [token_claims["iss"]],
                    "target_audience": audience if isinstance(audience, list) else [audience],
                    "required_scope": [SCOPE],
                    "scope_strategy": "exact",
                },
            }
        },
        "authorizers": {"allow": {"enabled": True}},
        "mutators": {"noop": {"enabled": True}},
    }


def gubernator_env(*, http: int, grpc: int, gossip: int) -> dict[str, str]:
    """One gubernator node on loopback, its own member-list peer (the default discovery; with
    `none` nobody would own a key). No trace exporter: by default it sends spans over OTLP to
    127.0.0.1:4317, where nothing listens here (as authbus, which exports none)."""
    gossip_at = f"127.0.0.1:{gossip}"
    return {
        "GUBER_HTTP_ADDRESS": f"127.0.0.1:{http}",
        "GUBER_GRPC_ADDRESS": f"127.0.0.1:{grpc}",
        "GUBER_ADVERTISE_ADDRESS": f"127.0.0.1:{grpc}",
        "GUBER_MEMBERLIST_BIND_ADDRESS": gossip_at,
        "GUBER_MEMBERLIST_ADDRESS": gossip_at,
        "GUBER_MEMBERLIST_KNOWN_NODES": gossip_at,
        "GUBER_LOG_LEVEL": "warning",
        "OTEL_TRACES_EXPORTER": "none",
    }


def gubernator_body(key: str, *, hits: int = 1) -> dict[str, Any]:
    """`POST /v1/GetRateLimits` for one key: `hits` counted against LIMIT per WINDOW_S."""
    request = {
        "name": "bench",
        "unique_key": key,
        "hits": hits,
        "limit": LIMIT,
        "duration": WINDOW_S * 1000,
    }
    return {"requests": [request]}
