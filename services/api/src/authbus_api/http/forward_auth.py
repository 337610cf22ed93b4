"""Forward auth (SPEC G3): a proxy asks "may this request through?" and gets 200 with the
caller's identity and rate headers, or the catalog's answer (401, 403, 404, 429...).

The request judged is the original one, read as the deployment's proxy sends it, and only
that way (`AUTHBUS_API_FORWARD_AUTH__DIALECT`):
- `nginx` (`auth_request`): `X-Original-Method` and `X-Original-URI`;
- `traefik` (ForwardAuth): `X-Forwarded-Method` and `X-Forwarded-Uri`;
- `envoy` (ext_authz, HTTP service with `path_prefix: /v0/forward-auth`): this request's own
  method, and its raw path after the prefix.
Headers of the other dialects are ignored, a missing one is a 400, and a repeated one a 400
(`http/request.py`). Only a trusted proxy (`AUTHBUS_API_TRUSTED_PROXIES`) is answered; any
other peer gets 403, so a client cannot ask about made-up requests or spend others' quota.

The original path goes through the same access decision as the gateway's (`access.py`):
normalised, matched against the declared routes, 400 when ambiguous. A path no declared route
has is denied (404) unless the deployment sets `AUTHBUS_API_FORWARD_AUTH__UNMATCHED` to
`authenticate` (then any valid credential passes, under the policies that apply everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from authbus_api.access import Access, Admitted
from authbus_api.core.access import Denied, RouteMemo, Unmatched
from authbus_api.core.errors import Error
from authbus_api.core.identity import identity_headers
from authbus_api.core.paths import split_target
from authbus_api.core.routing import RouteTable
from authbus_api.http.request import Facts

FORWARD_AUTH = "/v0/forward-auth"
Dialect = Literal["nginx", "traefik", "envoy"]
_HEADERS: dict[Dialect, tuple[str, str]] = {
    "nginx": ("x-original-method", "x-original-uri"),
    "traefik": ("x-forwarded-method", "x-forwarded-uri"),
}


def original(dialect: Dialect, facts: Facts) -> tuple[str, str] | Denied:
    """The method and raw path of the request the proxy asks about."""
    if dialect == "envoy":
        if not facts.raw_path.startswith(FORWARD_AUTH):
            return Denied(Error.PATH_REJECTED)  # the prefix itself was written another way
        return facts.method, facts.raw_path[len(FORWARD_AUTH) :] or "/"
    method_header, uri_header = _HEADERS[dialect]
    method, uri = facts.headers.get(method_header), facts.headers.get(uri_header)
    if not method or not uri:
        return Denied(Error.BAD_REQUEST)
    path, _ = split_target(uri)
    return method, path


@dataclass(frozen=True)
class ForwardAuth:
    access: Access
    declared: RouteTable
    dialect: Dialect = "nginx"
    unmatched: Unmatched = "deny"
    _routes: RouteMemo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_routes", RouteMemo(self.declared, unmatched=self.unmatched))

    def serves(self, path: str) -> bool:
        """Whether a (normalised) path is forward auth's in this dialect: Envoy appends the
        original path to the prefix."""
        if path == FORWARD_AUTH:
            return True
        return self.dialect == "envoy" and path.startswith(FORWARD_AUTH + "/")

    async def decide(self, facts: Facts) -> tuple[dict[str, str], Denied | None]:
        """The 200's headers, or the refusal."""
        if not facts.peer_trusted:
            return {}, Denied(Error.FORBIDDEN)
        asked = original(self.dialect, facts)
        if isinstance(asked, Denied):
            return {}, asked
        routed = self._routes(*asked)
        if isinstance(routed, Denied):
            return {}, routed
        result = await self.access.admit(routed, facts.headers.get("authorization"), facts.client)
        if isinstance(result, Denied):
            return {}, result
        return _granted(result), None


def _granted(admitted: Admitted) -> dict[str, str]:
    who = admitted.allowed.principal
    identity = identity_headers(who) if who is not None else {}
    return identity | dict(admitted.headers)
