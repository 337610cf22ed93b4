"""The error catalog (SPEC E1) and how an error is shown (E2).

Every error the api answers comes from `CATALOG`: a status, a stable id (the structured JSON
shape's `errorId`), and the message users read. `render` picks the representation from
`Accept`: an HTML page by default; `application/json` gives the simple shape
`{"code": "401", "error": "..."}` (code is a string, as the seed API documents);
`application/problem+json` gives RFC 9457. The structured shape and localized messages come
with issue #5; the ids are already stable here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum

import orjson


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    status: int
    error_id: str
    message: str
    title: str


class Error(StrEnum):
    BAD_REQUEST = "bad_request"
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    TOKEN_REQUIRED = "token_required"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_RELEASED = "not_released"
    TOO_MANY_REQUESTS = "too_many_requests"
    LOGIN_THROTTLED = "login_throttled"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


CATALOG: dict[Error, CatalogEntry] = {
    Error.BAD_REQUEST: CatalogEntry(
        400, "request.invalid", "Bad request/invalid input.", "Bad Request"
    ),
    Error.MISSING_TOKEN: CatalogEntry(401, "auth.missing", "Missing API token.", "Unauthorized"),
    Error.INVALID_TOKEN: CatalogEntry(401, "auth.invalid", "API token invalid.", "Unauthorized"),
    Error.TOKEN_REQUIRED: CatalogEntry(
        401,
        "auth.tokenRequired",
        "Two-factor authentication is on for this account: use an API token or key.",
        "Unauthorized",
    ),
    Error.FORBIDDEN: CatalogEntry(
        403, "action.forbidden", "You don't have access to this endpoint.", "Forbidden"
    ),
    Error.NOT_FOUND: CatalogEntry(
        404, "operation.notFound", "API endpoint not found.", "Not Found"
    ),
    Error.METHOD_NOT_ALLOWED: CatalogEntry(
        405, "method.notAllowed", "Method not allowed for this route.", "Method Not Allowed"
    ),
    Error.NOT_RELEASED: CatalogEntry(
        418,
        "operation.notReleased",
        "I'm a teapot: this endpoint is not released yet.",
        "I'm a teapot",
    ),
    Error.TOO_MANY_REQUESTS: CatalogEntry(
        429, "rate.exceeded", "Too many requests. Please try again later.", "Too Many Requests"
    ),
    Error.LOGIN_THROTTLED: CatalogEntry(
        429,
        "auth.throttled",
        "Too many failed sign-in attempts. Please try again later.",
        "Too Many Requests",
    ),
    Error.INTERNAL: CatalogEntry(
        500, "error.unknown", "Internal server error.", "Internal Server Error"
    ),
    Error.UNAVAILABLE: CatalogEntry(
        503,
        "service.unavailable",
        "Service unavailable. Please try again shortly.",
        "Service Unavailable",
    ),
}

HTML = "text/html; charset=utf-8"
JSON = "application/json"
PROBLEM = "application/problem+json"
_OFFERED = (HTML, JSON, PROBLEM)


def negotiate(accept: str | None) -> str:
    """The best of HTML, JSON and problem+json for an `Accept` header (q-values honoured);
    HTML when the header is absent, says nothing specific, or is unreadable."""
    if not accept:
        return HTML
    best, best_q, best_rank = HTML, 0.0, 0
    for part in accept.split(",")[:32]:
        media, *params = (p.strip() for p in part.split(";"))
        q = _q(params)
        media = media.lower()
        for offered in _OFFERED:
            base = offered.split(";")[0]
            rank = 3 if media == base else 1 if media in ("*/*", base.split("/")[0] + "/*") else 0
            if rank and q > 0 and (q, rank) > (best_q, best_rank):
                best, best_q, best_rank = offered, q, rank
    return best if best_rank == 3 else HTML


def _q(params: list[str]) -> float:
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    body: bytes
    content_type: str


def render(error: Error, accept: str | None, *, request_id: str | None = None) -> Rendered:
    entry = CATALOG[error]
    media = negotiate(accept)
    if media == JSON:
        simple: dict[str, str] = {"code": str(entry.status), "error": entry.message}
        if request_id:
            simple["requestId"] = request_id
        return Rendered(entry.status, orjson.dumps(simple), JSON)
    if media == PROBLEM:
        problem: dict[str, object] = {
            "type": f"urn:authbus:error:{entry.error_id}",
            "title": entry.title,
            "status": entry.status,
            "detail": entry.message,
        }
        if request_id:
            problem["requestId"] = request_id
        return Rendered(entry.status, orjson.dumps(problem), PROBLEM)
    return Rendered(entry.status, _page(entry, request_id).encode(), HTML)


def _page(entry: CatalogEntry, request_id: str | None) -> str:
    extra = f"<p>Request id: <code>{html.escape(request_id)}</code></p>" if request_id else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{entry.status} {html.escape(entry.title)}</title></head>"
        f"<body><h1>{entry.status} {html.escape(entry.title)}</h1>"
        f"<p>{html.escape(entry.message)}</p>{extra}</body></html>"
    )
