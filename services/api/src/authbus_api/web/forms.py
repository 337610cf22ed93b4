"""Reading a settings form: `application/x-www-form-urlencoded` only (what the pages send),
UTF-8, at most 64 fields, each field once unless it is a list (the scopes), each value
bounded. Anything else is the catalog's 400. The CSRF check comes first (`guarded`): a POST
without a valid token is the catalog's 403 `request.formExpired` and does nothing."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from authbus_api.core.errors import Error
from authbus_api.core.sessions import csrf_ok
from authbus_api.gate import ApiError
from authbus_api.http.router import facts_of

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 64


@dataclass(frozen=True)
class Form:
    fields: dict[str, list[str]]

    def one(self, name: str, max_chars: int = 1024) -> str:
        """The field's value ("" when absent); sent twice or too long is a 400."""
        values = self.fields.get(name, [])
        if len(values) > 1 or (values and len(values[0]) > max_chars):
            raise ApiError(Error.BAD_REQUEST)
        return values[0] if values else ""

    def many(self, name: str, max_chars: int = 64) -> list[str]:
        values = self.fields.get(name, [])
        if any(len(v) > max_chars for v in values):
            raise ApiError(Error.BAD_REQUEST)
        return values


async def read_form(request: Request) -> Form:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM:
        raise ApiError(Error.BAD_REQUEST)
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(Error.BAD_REQUEST) from exc
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return Form(fields)


async def guarded(request: Request, basis: str | None) -> Form:
    """The form of a POST that passed the CSRF check against `basis` (the session token, or
    the pre-session nonce), else the catalog's 403."""
    fetch_site = facts_of(request.scope).headers.get("sec-fetch-site")
    form = await read_form(request)
    values = form.fields.get("csrf", [])
    sent = values[0] if len(values) == 1 else None
    if not csrf_ok(basis, sent, fetch_site):
        raise ApiError(Error.FORM_EXPIRED)
    return form
