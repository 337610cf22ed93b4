"""Route templates and the route table (SPEC E4, A11): which route a normalised path is.

A template is a canonical path (`core/paths.py`) with parameters: `{name}` (one segment),
`{name:int}`, `{name:uuid}`, and `{name:path}` (the rest, slashes included; as the last part
of a template it also matches nothing at all, so `/files/{rest:path}` covers `/files`).
Templates are matched against the normalised path, so `/%61dmin`, `//admin` and `/admin/`
are the route `/admin`.

Matching: the first route whose template matches the path and that takes the method wins.
`HEAD` is taken by a route that takes `GET`, and is judged as that `GET` (its rate policies
and route id). A path some route matches but no route takes the method of is a `WrongMethod`
with every method of every matching route (`HEAD` beside `GET`), for `Allow`. Nothing
matching is None (404).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from authbus_api.core.errors import Error, JsonShape
from authbus_api.core.paths import normalise

# credential: a valid one is needed; anonymous: none is, the request counts per client
# address (R6); open: none is, and nothing is counted (the JWKS, the API docs).
Auth = Literal["credential", "anonymous", "open"]
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|uuid|path))?\}")
_CONVERTERS = {
    "str": "[^/]+",
    "int": "[0-9]+",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "path": ".*",
}


class TemplateError(ValueError):
    """A template that is not canonical or not understood."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What a route is, for the access decision. `upstream` None: one of the api's own."""

    template: str
    methods: frozenset[str]
    upstream: str | None = None
    released: bool = True
    auth: Auth = "credential"
    scopes: frozenset[str] = frozenset()
    policies: tuple[str, ...] = ()  # rate policies this route adds, by name (R2)
    error_shape: JsonShape | None = None
    forbidden: Error = Error.FORBIDDEN  # the 403 this route answers a missing scope with
    max_body_bytes: int | None = None  # None: the deployment's default for its kind

    def route_id(self, method: str) -> str:
        """The route's id for rate policies and logs: `METHOD /template` (HEAD as GET)."""
        return f"{'GET' if method == 'HEAD' else method} {self.template}"

    def takes(self, method: str) -> bool:
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """Who may call one of the api's own routes (the declared ones say it in their file)."""

    auth: Auth = "credential"
    scopes: frozenset[str] = frozenset()
    forbidden: Error = Error.FORBIDDEN


@dataclass(frozen=True, slots=True)
class Matched:
    route: RouteSpec
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class WrongMethod:
    allow: tuple[str, ...]
    error_shape: JsonShape | None = None  # of the first route with the path


def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression of a template; raises TemplateError for one that is not
    canonical or uses an unknown converter."""
    sample = _PARAM.sub("x", template)
    if "{" in sample or "}" in sample or normalise(sample) != sample:
        raise TemplateError(f"{template!r} is not a canonical path template")
    pattern, at = "", 0
    for found in _PARAM.finditer(template):
        name, converter = found.group(1), found.group(2) or "str"
        literal = re.escape(template[at : found.start()])
        at = found.end()
        if converter == "path" and at == len(template) and literal.endswith("/"):
            pattern += f"{literal[:-1]}(?:/(?P<{name}>.*))?"  # also the bare prefix
            continue
        pattern += f"{literal}(?P<{name}>{_CONVERTERS[converter]})"
    return re.compile(pattern + re.escape(template[at:]))


class RouteTable:
    """Routes in order; `match` gives the first that fits."""

    def __init__(self, routes: Iterable[RouteSpec] = ()) -> None:
        self.routes = tuple(routes)
        self._patterns = tuple((compile_template(r.template), r) for r in self.routes)

    def __add__(self, other: RouteTable) -> RouteTable:
        return RouteTable(self.routes + other.routes)

    def match(self, path: str, method: str) -> Matched | WrongMethod | None:
        """The route for a normalised path and a method, the methods the path allows, or
        None (no route has this path)."""
        allowed: set[str] = set()
        first: RouteSpec | None = None
        for pattern, route in self._patterns:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route.takes(method):
                return Matched(route, {k: v for k, v in found.groupdict().items() if v})
            allowed |= route.methods
            first = first or route
        if first is None:
            return None
        if "GET" in allowed:
            allowed.add("HEAD")
        return WrongMethod(tuple(sorted(allowed)), first.error_shape)
