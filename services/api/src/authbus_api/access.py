"""The access decision, run: the pure steps of `core/access.py` with the two that need the
outside world between and after them — who the credential is (the verdict cache, else authz
over Kafka) and the rate policies (local leases, else their owners).

    route (400 404 405 418) -> identify -> judge (401 403) -> rate (429)

A request without a valid credential (a 401) is counted per client address (R6) before its
answer, and answered 429 instead once that address is over its limit. A route that needs no
credential (sign-up, login) is counted per client address too.

Every adapter (gateway, forward auth, the api's own routes) routes with `core.access`, calls
`admit` and translates the value: nothing here raises for a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from authbus_api.core.access import Allowed, Denied, Routed, judge
from authbus_api.core.errors import Error
from authbus_api.gate import Gate

# Answers to requests without valid credentials: these count per client address (R6).
ANONYMOUS = frozenset({Error.MISSING_TOKEN, Error.INVALID_TOKEN, Error.TOKEN_REQUIRED})


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request let through: who, where, and the headers to answer with (R5, deprecation)."""

    allowed: Allowed
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Access:
    gate: Gate

    async def admit(
        self, routed: Routed, authorization: str | None, client: str
    ) -> Admitted | Denied:
        """Steps 401 to 429 for a routed request."""
        route_id = routed.route_id
        if routed.route.auth == "open":
            return Admitted(Allowed(routed, None))
        if routed.route.auth == "anonymous":
            counted = await self.gate.rate_anonymous(client, route_id)
            if isinstance(counted, Denied):
                return _shaped(counted, routed)
            return Admitted(Allowed(routed, None), counted)
        verdict = judge(routed, await self.gate.identify(authorization, client))
        if isinstance(verdict, Denied):
            return await self._refused(verdict, routed, client)
        who = verdict.principal
        if who is None:  # cannot happen: judge names who it lets through where one is needed
            raise RuntimeError(f"{route_id}: allowed without a principal")
        rated = await self.gate.rate(who, route_id)
        if isinstance(rated, Denied):
            return _shaped(rated, routed, who.account.locale)
        return Admitted(verdict, rated)

    async def _refused(self, denied: Denied, routed: Routed, client: str) -> Denied:
        """A 401 counts against the client's address: its rate headers ride along, or the
        answer becomes that address's 429."""
        if denied.error not in ANONYMOUS:
            return denied
        counted = await self.gate.rate_anonymous(client, routed.route_id)
        if isinstance(counted, Denied):
            return _shaped(counted, routed)
        return Denied(denied.error, {**denied.headers, **counted}, denied.shape)


def _shaped(denied: Denied, routed: Routed, locale: str | None = None) -> Denied:
    return Denied(denied.error, denied.headers, routed.route.error_shape, locale)
