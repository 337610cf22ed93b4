"""The one access decision (SPEC A11, A8, E4): may this request go on, and if not, which
answer from the catalog. Every adapter (the gateway, forward auth in each proxy dialect, the
api's own routes) asks here and only translates; "why was this request refused" is answered
by this file.

The order, each step only when the ones before passed:
  400  the method is not a token, or the path is malformed or ambiguous (`core/paths.py`)
  404  no route has the normalised path (forward auth: unless the deployment chose to
       authenticate unmatched paths)
  405  a route has the path but not the method (`Allow` lists every method it has)
  418  the route is not released
  401  the route needs a credential and there is none valid (or 429/503 from authz: a
       throttled login, authz unreachable)
  403  the credential lacks a scope the route needs
  429  a rate policy is spent (decided by the rate limiter after `judge`; not pure)

`route` and `judge` are the two halves, split where the credential has to be looked up
(which may need a round trip). Both are pure: values in, a value out, nothing raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from authbus_api.core.errors import Error, JsonShape
from authbus_api.core.paths import normalise
from authbus_api.core.routing import Matched, RouteSpec, RouteTable, WrongMethod
from authbus_shared.contracts.authz import AuthMethod

Unmatched = Literal["deny", "authenticate"]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")  # RFC 9110 token, bounded
ANY_ROUTE = RouteSpec(template="*", methods=frozenset())  # unmatched, authenticate mode


class AccountLike(Protocol):
    """An account as a credential names it (`verdict_cache.Account`, or a contract's
    `AccountView`)."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def locale(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid credential belongs to, and what it may do."""

    account: AccountLike
    method: AuthMethod
    scopes: tuple[str, ...]
    credential_id: str | None
    mfa: bool = False
    deprecated: bool = False


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal: the catalog entry to answer, its extra headers, the route's JSON shape."""

    error: Error
    headers: Mapping[str, str] = field(default_factory=dict)
    shape: JsonShape | None = None
    locale: str | None = None  # the account's, once the caller is known (E3)


@dataclass(frozen=True, slots=True)
class Routed:
    """A request that passed 400-418: its route, and the normalised path, which is the one
    matched and the one sent upstream."""

    route: RouteSpec
    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def route_id(self) -> str:
        if self.route is ANY_ROUTE:
            return f"{'GET' if self.method == 'HEAD' else self.method} *"
        return self.route.route_id(self.method)


@dataclass(frozen=True, slots=True)
class Allowed:
    """A request that passed every check but the rate policies."""

    routed: Routed
    principal: Principal | None  # None: a route that needs no credential


def route(
    table: RouteTable, method: str, raw_path: str, *, unmatched: Unmatched = "deny"
) -> Routed | Denied:
    """Steps 400, 404, 405, 418, for the path as sent."""
    return route_path(table, method, normalise(raw_path), unmatched=unmatched)


class RouteMemo:
    """`route` on one table, remembered for the (method, raw path) pairs asked about lately.
    `route` is pure and the table fixed, so a remembered answer is the answer; it saves the
    hot path the normalising and the matching (a few µs; issue #13). Only routed answers of
    short paths are kept, at most `size`, all forgotten when full: distinct made-up paths
    cost what they cost without it, and the memory is bounded."""

    MAX_PATH = 256

    def __init__(self, table: RouteTable, *, unmatched: Unmatched = "deny", size: int = 4096):
        self.table = table
        self.unmatched: Unmatched = unmatched
        self._size = size
        self._memo: dict[tuple[str, str], Routed] = {}

    def __call__(self, method: str, raw_path: str) -> Routed | Denied:
        key = (method, raw_path)
        found = self._memo.get(key)
        if found is not None:
            return found
        routed = route(self.table, method, raw_path, unmatched=self.unmatched)
        if isinstance(routed, Routed) and len(raw_path) <= self.MAX_PATH:
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[key] = routed
        return routed


def route_path(
    table: RouteTable, method: str, path: str | None, *, unmatched: Unmatched = "deny"
) -> Routed | Denied:
    """The same for a path already normalised (None: it could not be)."""
    if not _TOKEN.fullmatch(method):
        return Denied(Error.BAD_REQUEST)
    if path is None:
        return Denied(Error.PATH_REJECTED)
    found = table.match(path, method)
    if found is None:
        if unmatched == "authenticate":
            return Routed(ANY_ROUTE, method, path)
        return Denied(Error.NOT_FOUND)
    if isinstance(found, WrongMethod):
        allow = {"Allow": ", ".join(found.allow)}
        return Denied(Error.METHOD_NOT_ALLOWED, allow, found.error_shape)
    return _released(found, method, path)


def _released(found: Matched, method: str, path: str) -> Routed | Denied:
    spec = found.route
    if not spec.released:
        return Denied(Error.NOT_RELEASED, shape=spec.error_shape)
    return Routed(spec, method, path, found.params)


def judge(routed: Routed, caller: Principal | Denied | None) -> Allowed | Denied:
    """Steps 401 and 403. `caller`: who the credential is, or why there is none valid (the
    401 to answer, or authz's 429/503); None when the route needs no credential (then it is
    not looked up)."""
    spec = routed.route
    if spec.auth != "credential":
        return Allowed(routed, caller if isinstance(caller, Principal) else None)
    if caller is None:
        return Denied(Error.MISSING_TOKEN, shape=spec.error_shape)
    if isinstance(caller, Denied):
        return Denied(caller.error, caller.headers, spec.error_shape)
    if not spec.scopes <= frozenset(caller.scopes):
        return Denied(spec.forbidden, shape=spec.error_shape, locale=caller.account.locale)
    return Allowed(routed, caller)
