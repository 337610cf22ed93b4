"""Errors become HTTP answers here, and only here (SPEC E1, E2, E3).

`ErrorStyle` renders a catalog entry (`core/errors.py`) in the negotiated representation and
language for any layer that answers: the framework's exception handlers (`response`), the
ASGI adapters in front of it (`send`), and the server's own protocol code before a request
reaches the app (`raw`, for 400/408/431 on bytes that never became a request).

Language: the client's `Accept-Language`, else the account's locale (once known), else the
deployment's. Shape: the route's, else the deployment's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from authbus_api.core.errors import CATALOG, Error, JsonShape, Rendered, render
from authbus_api.core.locale import negotiate as negotiate_locale
from authbus_api.translations import Catalogs
from authbus_shared.ops import Send

RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True)
class ErrorStyle:
    """How errors speak (E2, E3): the catalogs, the deployment's language and JSON shape."""

    catalogs: Catalogs = field(default_factory=Catalogs.load)
    default_locale: str = "en"
    shape: JsonShape = "simple"

    def render(
        self,
        error: Error,
        accept: str | None,
        accept_language: str | None,
        *,
        account_locale: str | None = None,
        shape: JsonShape | None = None,
    ) -> Rendered:
        """The catalog entry as a body; a 500 gets a fresh request id (and nothing else)."""
        language = negotiate_locale(accept_language, account_locale, self.default_locale)
        return render(
            error,
            accept,
            request_id=uuid.uuid4().hex if error is Error.INTERNAL else None,
            language=language,
            translate=self.catalogs.gettext(language),
            shape=shape or self.shape,
        )

    def response(
        self, error: Error, request: Request, headers: Mapping[str, str] | None = None
    ) -> Response:
        """For the framework's handlers: the request's state may name the account's locale
        and the route's shape."""
        rendered = self.render(
            error,
            request.headers.get("accept"),
            request.headers.get("accept-language"),
            account_locale=getattr(request.state, "account_locale", None),
            shape=getattr(request.state, "error_shape", None),
        )
        return Response(
            rendered.body,
            status_code=rendered.status,
            media_type=rendered.content_type,
            headers={**(headers or {}), "Content-Language": rendered.language},
        )

    def encoded(
        self,
        error: Error,
        request_headers: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
        *,
        account_locale: str | None = None,
        shape: JsonShape | None = None,
        close: bool = False,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, raw headers and body, negotiated from `request_headers` (lower-case
        names). `close` adds `Connection: close` (the rest of the request is not read)."""
        rendered = self.render(
            error,
            request_headers.get("accept"),
            request_headers.get("accept-language"),
            account_locale=account_locale,
            shape=shape,
        )
        headers = [
            (b"content-type", rendered.content_type.encode("latin-1")),
            (b"content-length", str(len(rendered.body)).encode("latin-1")),
            (b"content-language", rendered.language.encode("latin-1")),
        ]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()
        ]
        if close:
            headers.append((b"connection", b"close"))
        return rendered.status, headers, rendered.body

    async def send(
        self,
        send: Send,
        error: Error,
        request_headers: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
        *,
        account_locale: str | None = None,
        shape: JsonShape | None = None,
        close: bool = False,
    ) -> None:
        """Answer an ASGI request with the catalog's entry."""
        status, headers, body = self.encoded(
            error, request_headers, extra, account_locale=account_locale, shape=shape, close=close
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def raw(self, error: Error, request_headers: Mapping[str, str] | None = None) -> bytes:
        """A whole HTTP/1.1 answer as bytes, for the server's protocol code: the connection is
        closed after it."""
        status, headers, body = self.encoded(error, request_headers or {}, close=True)
        reason = CATALOG[error].title.encode("latin-1")
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines += [name + b": " + value for name, value in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def lower_headers(raw: RawHeaders) -> dict[str, str]:
    """Request headers by lower-case name (the last of repeated ones), latin-1 decoded."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
