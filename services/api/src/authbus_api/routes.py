"""Declared routes (SPEC E4, G2): what the api fronts, from a TOML file.

One `[[route]]` table per route: a path template (`/v1/projects/{id}`, Starlette syntax), its
methods, the upstream it is proxied to, whether it is released, the scopes a caller needs, the
rate policies it adds (by name, from the policies file) and, optionally, its own JSON error
shape. Matching: the first route whose template matches the path; a path no route matches is
404, a matching path with another method is 405 with `Allow` (every method of every route on
that path), an unreleased route is 418, a caller without a required scope is 403.

Errors: a bad file stops the api at start, naming the problem (`ConfigError`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator
from starlette.routing import compile_path

from authbus_shared.settings import ConfigError

METHOD = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(pattern=r"^/[^\s?#]*$", max_length=500)
    methods: tuple[METHOD, ...] = Field(min_length=1)
    upstream: HttpUrl
    released: bool = True
    scopes: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    error_shape: Literal["simple", "structured"] | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(str(v).upper() for v in value)
        return value

    @property
    def id(self) -> str:
        """The route's id for policies and logs: `METHOD /template` per method."""
        return self.path


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: list[RouteConfig] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Route:
    config: RouteConfig
    pattern: re.Pattern[str]

    @property
    def template(self) -> str:
        return self.config.path

    def route_id(self, method: str) -> str:
        return f"{method} {self.config.path}"


@dataclass(frozen=True, slots=True)
class Matched:
    route: Route
    path_params: dict[str, str]


@dataclass(frozen=True, slots=True)
class WrongMethod:
    allow: tuple[str, ...]


class RouteTable:
    def __init__(self, routes: list[RouteConfig]) -> None:
        self.routes = [Route(r, compile_path(r.path)[0]) for r in routes]

    def match(self, path: str, method: str) -> Matched | WrongMethod | None:
        """The route for a request, the methods the path allows, or None (404)."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if method in route.config.methods or (
                method == "HEAD" and "GET" in route.config.methods
            ):
                return Matched(route, found.groupdict())
            allowed += [m for m in route.config.methods if m not in allowed]
        return WrongMethod(tuple(allowed)) if allowed else None


def load_routes(path: Path | None) -> RouteTable:
    """The routes of `path` (none without a file: the api then serves only /v0)."""
    if path is None:
        return RouteTable([])
    try:
        parsed = RoutesFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"routes file {path}: {exc}") from exc
    return RouteTable(parsed.route)
