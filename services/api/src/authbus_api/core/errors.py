"""The error catalog (SPEC E1) and how an error is shown (E2).

Every error the api answers comes from `CATALOG`: a status, a stable id (the structured JSON
shape's `errorId`), and the message users read (English, the source of the translations in
`locales/`, E3). `render` picks the representation from `Accept`: an HTML page by default;
`application/json` gives the deployment's JSON shape: the simple
`{"code": "401", "error": "..."}` (code is a string, as the seed API documents) or the
structured `{"error": {"errorId": "...", "errorMessage": "..."}}`;
`application/problem+json` gives RFC 9457. Messages and titles are translated into the
negotiated language (`core/locale.py`), which the answer names in `Content-Language`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

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
    # the management API (G1)
    BAD_CREDENTIALS = "bad_credentials"
    CODE_REQUIRED = "code_required"
    BAD_CODE = "bad_code"
    NO_SUCH_RESOURCE = "no_such_resource"
    SIGNUP_CLOSED = "signup_closed"
    SCOPE_NOT_GRANTED = "scope_not_granted"
    WEAK_PASSWORD = "weak_password"
    FORM_EXPIRED = "form_expired"  # the settings page's CSRF check (ADR 0018)
    # the strict edge (E5, A11)
    PATH_REJECTED = "path_rejected"
    DUPLICATE_HEADER = "duplicate_header"
    HEADERS_TOO_LARGE = "headers_too_large"
    BODY_TOO_LARGE = "body_too_large"
    REQUEST_TIMEOUT = "request_timeout"


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
    Error.BAD_CREDENTIALS: CatalogEntry(
        401, "auth.credentials", "Email or password incorrect.", "Unauthorized"
    ),
    Error.CODE_REQUIRED: CatalogEntry(
        401,
        "auth.codeRequired",
        "Two-factor authentication is on: a current code is needed.",
        "Unauthorized",
    ),
    Error.BAD_CODE: CatalogEntry(
        400, "auth.codeInvalid", "The code is wrong or was already used.", "Bad Request"
    ),
    Error.NO_SUCH_RESOURCE: CatalogEntry(
        404, "resource.notFound", "No such resource.", "Not Found"
    ),
    Error.SIGNUP_CLOSED: CatalogEntry(
        403, "signup.closed", "Sign-up is closed: ask an administrator.", "Forbidden"
    ),
    Error.SCOPE_NOT_GRANTED: CatalogEntry(
        403,
        "scope.notGranted",
        "A new credential can only have scopes you have been granted.",
        "Forbidden",
    ),
    Error.WEAK_PASSWORD: CatalogEntry(
        400,
        "password.policy",
        "A password needs 8 to 1024 characters; spaces and any other characters are welcome.",
        "Bad Request",
    ),
    Error.FORM_EXPIRED: CatalogEntry(
        403,
        "request.formExpired",
        "This form has expired or came from another site. Reload the page and try again.",
        "Forbidden",
    ),
    Error.PATH_REJECTED: CatalogEntry(
        400, "request.pathRejected", "The request path is malformed or ambiguous.", "Bad Request"
    ),
    Error.DUPLICATE_HEADER: CatalogEntry(
        400,
        "request.duplicateHeader",
        "A header that may appear only once was sent more than once.",
        "Bad Request",
    ),
    Error.HEADERS_TOO_LARGE: CatalogEntry(
        431,
        "request.headersTooLarge",
        "The request headers are too large.",
        "Request Header Fields Too Large",
    ),
    Error.BODY_TOO_LARGE: CatalogEntry(
        413, "request.bodyTooLarge", "The request body is too large.", "Content Too Large"
    ),
    Error.REQUEST_TIMEOUT: CatalogEntry(
        408, "request.timeout", "The request took too long to arrive.", "Request Timeout"
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


JsonShape = Literal["simple", "structured"]


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    body: bytes
    content_type: str
    language: str


def _same(text: str) -> str:
    return text


def render(
    error: Error,
    accept: str | None,
    *,
    request_id: str | None = None,
    language: str = "en",
    translate: Callable[[str], str] = _same,
    shape: JsonShape = "simple",
) -> Rendered:
    entry = CATALOG[error]
    media = negotiate(accept)
    message = translate(entry.message)
    if media == JSON:
        body: dict[str, object]
        if shape == "structured":
            detail: dict[str, str] = {"errorId": entry.error_id, "errorMessage": message}
            if request_id:
                detail["requestId"] = request_id
            body = {"error": detail}
        else:
            body = {"code": str(entry.status), "error": message}
            if request_id:
                body["requestId"] = request_id
        return Rendered(entry.status, orjson.dumps(body), JSON, language)
    title = translate(entry.title)
    if media == PROBLEM:
        problem: dict[str, object] = {
            "type": f"urn:authbus:error:{entry.error_id}",
            "title": title,
            "status": entry.status,
            "detail": message,
        }
        if request_id:
            problem["requestId"] = request_id
        return Rendered(entry.status, orjson.dumps(problem), PROBLEM, language)
    page = _page(
        entry.status,
        title,
        message,
        language=language,
        request_id=request_id,
        translate=translate,
    )
    return Rendered(entry.status, page.encode(), HTML, language)


def _page(
    status: int,
    title: str,
    message: str,
    *,
    language: str,
    request_id: str | None,
    translate: Callable[[str], str],
) -> str:
    extra = (
        f"<p>{html.escape(translate('Request id:'))} <code>{html.escape(request_id)}</code></p>"
        if request_id
        else ""
    )
    return (
        f'<!doctype html><html lang="{html.escape(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{status} {html.escape(title)}</title></head>"
        f"<body><main><h1>{status} {html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p>{extra}</main></body></html>"
    )
