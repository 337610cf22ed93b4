"""What the access decision reads of an HTTP request, taken once from the ASGI scope (SPEC
A11, E5, R6, A10).

- The method and the path as sent on the wire (`raw_path`: still percent-encoded, never
  uvicorn's decoded `path`, which turns `%2F` into a separator).
- Refused (400) as ambiguous: a method-override header (`X-HTTP-Method-Override` and its
  kin: an upstream honouring it would run a method that was never judged), and a header that
  spells an identity header with `_` (`X_Authbus_Account_Id`: CGI and WSGI servers read it as
  the real one).
- Headers by lower-case name. A field that may appear only once (`SINGLE`: the credential,
  `Host`, `Content-Length`, and the headers proxies use to name the original request) sent
  twice is refused (400): proxies and servers disagree on which one counts. Other repeated
  fields are combined in order with ", " (RFC 9110 §5.3), `Cookie` with "; " (RFC 9113
  §8.2.3: HTTP/2 clients send each cookie in a field of its own).
- The real client: the TCP peer, or, when the peer is a trusted proxy, the address it puts in
  `X-Forwarded-For` (`core/client_address.py`). This is the only client-address mechanism:
  uvicorn's own proxy-header handling is off (`runner.http_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from authbus_api.core.access import Denied
from authbus_api.core.client_address import Proxies
from authbus_api.core.errors import Error
from authbus_shared.ops import Scope

# Headers that name another method than the request line's: frameworks that honour them
# (Rails, Express's method-override, Symfony) would run a method that was never judged.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
IDENTITY_PREFIX = "x-authbus-"
SINGLE = frozenset(
    {
        "authorization",
        "host",
        "content-length",
        "x-original-uri",
        "x-original-method",
        "x-forwarded-uri",
        "x-forwarded-method",
    }
)


@dataclass(frozen=True, slots=True)
class Facts:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    peer: str | None
    client: str  # the real client: the peer, or what trusted proxies say
    peer_trusted: bool  # the peer is a trusted proxy


def read(scope: Scope, proxies: Proxies) -> Facts | Denied:
    """The request's facts, or the 400 for a duplicated single field."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in METHOD_OVERRIDES or ("_" in name and _posing_as_identity(name)):
            return Denied(Error.BAD_REQUEST)
        if name in headers:
            if name in SINGLE:
                return Denied(Error.DUPLICATE_HEADER)
            headers[name] += ("; " if name == "cookie" else ", ") + value  # RFC 9113 8.2.3
        else:
            headers[name] = value
    raw = scope.get("raw_path")
    raw_path = raw.decode("latin-1") if raw else quote(scope["path"], safe="/:@!$&'()*+,;=~")
    peer = scope["client"][0] if scope.get("client") else None
    return Facts(
        method=scope["method"],
        raw_path=raw_path,
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        peer=peer,
        client=proxies.client(peer, headers.get("x-forwarded-for")),
        peer_trusted=proxies.trusts(peer),
    )


def _posing_as_identity(name: str) -> bool:
    """`X_Authbus_Account_Id` and the like: servers that map `_` and `-` to the same variable
    (CGI, WSGI: `HTTP_X_AUTHBUS_ACCOUNT_ID`) could read it as the identity header the gateway
    sets. Headers with `-` in that namespace are replaced by the gateway; these cannot be."""
    return name.replace("_", "-").startswith(IDENTITY_PREFIX)
