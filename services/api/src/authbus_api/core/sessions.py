"""The settings page's session and form rules (issue #12, ADR 0018), pure.

- **Where a session counts.** Only under `/settings`, and there it is the *only* credential:
  the session cookie is read, `Authorization` is ignored. Browsers send both on their own
  (a cookie, and Basic credentials a user once typed into a prompt), so either would be an
  ambient credential a forged form could ride; the cookie alone is guarded by SameSite and the
  CSRF token. Everywhere else the cookie is ignored and `Authorization` alone counts.
- **The cookie.** `__Host-authbus_session` (Secure, Path=/, no Domain: a sibling subdomain
  cannot set or shadow it), HttpOnly, SameSite=Strict. A deployment on plain http (local
  runs) drops Secure and with it the prefix. A header carrying the name twice is ambiguous
  (cookie tossing) and counts as no session. The value must be a token's characters.
- **CSRF.** Every form carries `csrf_token(basis)`: HMAC-SHA256 keyed with SHA-256 of the basis,
  over "csrf". The basis is the session token once signed in, else a random pre-session nonce
  in its own cookie (the sign-in and sign-up forms: login CSRF). Stateless, so any api instance
  checks it; compared in constant time. A POST whose browser says it came from another site
  (`Sec-Fetch-Site`) is refused before the token is even looked at.
- **Expiry.** A new token's lifetime from the form: 7, 30 or 90 days, a date (the token expires
  at 00:00 UTC that day; tomorrow at the earliest, within the longest lifetime), or never.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

PREFIX = "/settings"
SIGN_IN = PREFIX + "/sign-in"
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-._~+/]{1,4096}=*$")  # RFC 6750 b64token
CROSS_SITE = frozenset({"cross-site", "same-site"})
PRESET_DAYS = (7, 30, 90)
MAX_LIFETIME_S = 10 * 365 * 86400


@dataclass(frozen=True, slots=True)
class Sessions:
    """The session cookie's rules for one deployment."""

    secure: bool = True  # False only for plain-http local runs
    lifetime_s: int = 3600

    @property
    def cookie(self) -> str:
        return "__Host-authbus_session" if self.secure else "authbus_session"

    @property
    def nonce_cookie(self) -> str:
        return "__Host-authbus_presession" if self.secure else "authbus_presession"

    def authorization(self, path: str, headers: dict[str, str]) -> str | None:
        """The credential judged for a request to `path` (normalised): the session on the
        settings pages, `Authorization` everywhere else."""
        if not owns(path):
            return headers.get("authorization")
        token = self.token(headers)
        return f"Bearer {token}" if token else None

    def token(self, headers: dict[str, str]) -> str | None:
        return cookie_value(headers.get("cookie"), self.cookie)

    def nonce(self, headers: dict[str, str]) -> str | None:
        return cookie_value(headers.get("cookie"), self.nonce_cookie)

    def set_session(self, token: str) -> str:
        return self._set(self.cookie, token, self.lifetime_s)

    def set_nonce(self, nonce: str) -> str:
        return self._set(self.nonce_cookie, nonce, self.lifetime_s)

    def clear_session(self) -> str:
        return self._set(self.cookie, "", 0)

    def _set(self, name: str, value: str, max_age_s: int) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{name}={value}; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Strict{secure}"


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def cookie_value(header: str | None, name: str) -> str | None:
    """The one value of cookie `name`; None when absent, repeated or not token characters."""
    if not header:
        return None
    found = [
        value.strip()
        for part in header.split(";")
        for key, eq, value in [part.strip().partition("=")]
        if eq and key == name
    ]
    if len(found) != 1 or not _TOKEN_CHARS.match(found[0]):
        return None
    return found[0]


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(basis: str) -> str:
    key = hashlib.sha256(basis.encode()).digest()
    return hmac.new(key, b"csrf", hashlib.sha256).hexdigest()


def csrf_ok(basis: str | None, sent: str | None, fetch_site: str | None) -> bool:
    """May this POST act: from this site, with the token its basis (the session, or the
    pre-session nonce) gives."""
    if fetch_site is not None and fetch_site.lower() in CROSS_SITE:
        return False
    if not basis or not sent:
        return False
    return hmac.compare_digest(csrf_token(basis).encode(), sent.encode())


def lifetime_s(choice: str, on: str | None, now: datetime) -> int | ValueError | None:
    """A new token's lifetime in seconds (None: never expires), or why the choice is wrong."""
    if choice == "never":
        return None
    if choice.isdigit() and int(choice) in PRESET_DAYS:
        return int(choice) * 86400
    if choice != "date":
        return ValueError("unknown expiry")
    try:
        day = date.fromisoformat(on or "")
    except ValueError:
        return ValueError("not a date")
    seconds = int((datetime.combine(day, time(), UTC) - now).total_seconds())
    if day <= now.astimezone(UTC).date() or seconds > MAX_LIFETIME_S:
        return ValueError("date out of range")
    return seconds
