"""Rate policies from configuration (SPEC R1, R2, R3, R6, R7, R8; ADR 0010).

The built-in set is what the seeds promise: every account 60 requests per 60 s across all
routes with a 60 s lockout (R1, R3), and the same for requests without valid credentials,
counted per client address (R6). A lockout that comes back within 10 minutes of the last
doubles, up to 16 minutes (R7). A TOML file (`AUTHBUS_API_RATE__POLICIES_FILE`, example in
`config/rate-policies.toml`) replaces the set: one `[[policy]]` table per policy, the fields of
`PolicyConfig`. Every policy whose scope and routes match a request applies (R2); a route in
the routes file can add policies by name (`with_routes`), and a policy with
`every_route = false` applies only where a route names it.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from authbus_api.core.rates import RatePolicy
from authbus_api.core.routing import RouteTable
from authbus_shared.contracts.ratelimit import LeasePolicy
from authbus_shared.settings import ConfigError

NOWHERE = "-"  # the route id of no route: a policy that applies only where routes name it


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    scope: Literal["account", "address"] = "account"
    limit: int = Field(ge=1, le=100_000_000)
    window_s: int = Field(ge=1, le=86_400)
    lockout_s: int = Field(default=0, ge=0, le=86_400)
    lockout_cap_s: int = Field(default=0, ge=0, le=86_400)
    strike_memory_s: int = Field(default=0, ge=0, le=86_400)
    fail_mode: Literal["open", "closed"] = "open"
    routes: tuple[str, ...] = Field(
        default=(), description='route ids like "GET /v0/me"; empty: every route'
    )
    every_route: bool = Field(
        default=True,
        description="with no `routes`: false applies the policy only where a route names it",
    )

    @model_validator(mode="after")
    def _cap_covers_lockout(self) -> PolicyConfig:
        if self.lockout_cap_s and self.lockout_cap_s < self.lockout_s:
            raise ValueError("lockout_cap_s must be 0 or at least lockout_s")
        return self

    def policy(self) -> RatePolicy:
        return RatePolicy(
            lease=LeasePolicy(
                name=self.name,
                limit=self.limit,
                window_s=self.window_s,
                lockout_s=self.lockout_s,
                lockout_cap_s=self.lockout_cap_s,
                strike_memory_s=self.strike_memory_s,
            ),
            scope=self.scope,
            routes=frozenset(self.routes or (() if self.every_route else (NOWHERE,))),
            fail_mode=self.fail_mode,
        )


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: list[PolicyConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique(self) -> PolicyFile:
        names = [p.name for p in self.policy]
        if len(names) != len(set(names)):
            raise ValueError(f"policy names must be unique: {names}")
        return self


BUILT_IN = PolicyFile(
    policy=[
        PolicyConfig(
            name="global",
            scope="account",
            limit=60,
            window_s=60,
            lockout_s=60,
            lockout_cap_s=960,
            strike_memory_s=600,
        ),
        PolicyConfig(
            name="anonymous",
            scope="address",
            limit=60,
            window_s=60,
            lockout_s=60,
            lockout_cap_s=960,
            strike_memory_s=600,
        ),
    ]
)


def load_policies(path: Path | None) -> tuple[RatePolicy, ...]:
    """The policies of `path`, or the built-in set; a bad file fails naming what is wrong."""
    if path is None:
        return tuple(p.policy() for p in BUILT_IN.policy)
    try:
        parsed = PolicyFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"rate policies file {path}: {exc}") from exc
    return tuple(p.policy() for p in parsed.policy)


def with_routes(policies: tuple[RatePolicy, ...], routes: RouteTable) -> tuple[RatePolicy, ...]:
    """The policies, each also applying to the routes that name it (`policies = [...]` in the
    routes file; R2). A policy that applies to every route needs nothing more."""
    named: dict[str, set[str]] = {}
    known = {p.lease.name for p in policies}
    for route in routes.routes:
        for name in route.policies:
            if name not in known:
                raise ConfigError(f"route {route.template} names unknown rate policy {name!r}")
            ids = {route.route_id(m) for m in route.methods}
            named.setdefault(name, set()).update(ids)
    return tuple(
        replace(p, routes=p.routes | frozenset(named[p.lease.name]))
        if p.routes and p.lease.name in named
        else p
        for p in policies
    )
