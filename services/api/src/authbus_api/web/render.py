"""Rendering the settings pages: Jinja2 templates (autoescaped) in the language negotiated as
errors are (`Accept-Language`, then the account's locale, then the deployment's; E3), with
the same gettext catalogs, and the headers every page carries (no caching, no framing, a
content security policy that allows only the api's own files)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from authbus_api.core.errors import CATALOG, Error
from authbus_api.core.locale import negotiate
from authbus_api.core.sessions import Sessions
from authbus_api.http.errors import ErrorStyle

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
ASSETS = HERE / "assets"
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# What a finished action says on the page it lands on (`?done=`): fixed texts, never echoed.
DONE = {
    "account-created": "Your account is ready. Sign in to manage your tokens.",
    "signed-out": "You are signed out.",
    "password-changed": (
        "Your password is changed. Every token made before is revoked: sign in again."
    ),
    "token-revoked": "The token is revoked.",
    "key-revoked": "The key is revoked.",
    "2fa-on": "Two-factor authentication is on.",
    "2fa-off": "Two-factor authentication is off.",
}

# What a refused form says when authz was not asked (English: the templates translate).
PASSWORDS_DIFFER = "The new password and its confirmation differ."
TOKEN_FORM = "Give the token a name, and an expiry date from tomorrow on."  # noqa: S105
MESSAGES = (*DONE.values(), PASSWORDS_DIFFER, TOKEN_FORM)  # all translated (test_translations)


@dataclass(frozen=True)
class Pages:
    """What every settings page needs: the catalogs and the session's cookie rules."""

    style: ErrorStyle
    sessions: Sessions

    def language(self, request: Request) -> str:
        account_locale = getattr(request.state, "account_locale", None)
        accept = request.headers.get("accept-language")
        return negotiate(accept, account_locale, self.style.default_locale)

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        language = self.language(request)
        gettext = self.style.catalogs.gettext(language)
        done = DONE.get(request.query_params.get("done", ""))
        body = ENV.get_template(template).render(_=gettext, lang=language, done=done, **context)
        response = HTMLResponse(body, status, headers={**PAGE_HEADERS, **(headers or {})})
        response.headers["Content-Language"] = language
        return response

    def refusal(self, error: Error) -> str:
        """An error of the catalog as a form shows it (translated by the template)."""
        return CATALOG[error].message


def redirect(to: str, *, cookies: tuple[str, ...] = ()) -> RedirectResponse:
    """303 See Other (a POST's result is fetched with GET), setting `cookies`."""
    response = RedirectResponse(to, status_code=303, headers=PAGE_HEADERS)
    for cookie in cookies:
        response.headers.append("Set-Cookie", cookie)
    return response
