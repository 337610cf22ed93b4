"""Declared routes (SPEC E4, G2): what the api fronts, from a TOML file.

One `[[route]]` table per route: a path template (`/v1/projects/{id}`; `{name}`,
`{name:int}`, `{name:uuid}`, `{rest:path}`; see `core/routing.py`), its methods, the upstream
it is proxied to, whether it is released, whether it is public (no credential needed; still
limited per client address, R6), the scopes a caller needs, the rate policies it adds (by
name, from the policies file), the largest request body it takes and, optionally, its own
JSON error shape. How a request is matched and judged: `core/access.py`.

A template must be canonical (what `core/paths.py` makes of a request path: no `//`, no dot
segments, no trailing slash, no `;`) and may not take a path of the api's own (`/v0`,
`/.well-known`).

Errors: a bad file stops the api at start, naming the problem (`ConfigError`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from authbus_api.core.routing import RouteSpec, RouteTable, TemplateError, compile_template
from authbus_shared.settings import ConfigError

METHOD = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RESERVED = ("/v0", "/.well-known", "/settings")


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(max_length=500)
    methods: tuple[METHOD, ...] = Field(min_length=1)
    upstream: HttpUrl
    released: bool = True
    public: bool = False
    scopes: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    max_body_bytes: int | None = Field(default=None, ge=0)
    error_shape: Literal["simple", "structured"] | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(str(v).upper() for v in value)
        return value

    @field_validator("path")
    @classmethod
    def _canonical(cls, value: str) -> str:
        try:
            compile_template(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        if any(value == p or value.startswith(p + "/") for p in RESERVED):
            raise ValueError(f"{value!r} is under one of the api's own paths {RESERVED}")
        return value

    def spec(self) -> RouteSpec:
        return RouteSpec(
            template=self.path,
            methods=frozenset(self.methods),
            upstream=str(self.upstream),
            released=self.released,
            auth="anonymous" if self.public else "credential",
            scopes=frozenset(self.scopes),
            policies=self.policies,
            error_shape=self.error_shape,
            max_body_bytes=self.max_body_bytes,
        )


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: list[RouteConfig] = Field(default_factory=list)


def load_routes(path: Path | None) -> RouteTable:
    """The routes of `path` (none without a file: the api then serves only /v0)."""
    if path is None:
        return RouteTable([])
    try:
        parsed = RoutesFile.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"routes file {path}: {exc}") from exc
    return RouteTable(r.spec() for r in parsed.route)
