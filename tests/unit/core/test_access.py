"""The one access decision (SPEC A11, A8, E4): the order 400 404 405 418 401 403, on the
normalised path, for every way of writing a path."""

from __future__ import annotations

import pytest

from authbus_api.core.access import (
    ANY_ROUTE,
    Allowed,
    Denied,
    Principal,
    Routed,
    RouteMemo,
    judge,
    route,
)
from authbus_api.core.errors import CATALOG, Error
from authbus_api.core.paths import split_target
from authbus_api.core.routing import RouteSpec, RouteTable, TemplateError, compile_template
from authbus_shared.contracts.authz import AccountView, AuthMethod
from tests.path_variants import VARIANTS, Variant

UP = "http://upstream"
TABLE = RouteTable(
    [
        RouteSpec("/admin", frozenset({"GET", "POST"}), UP, scopes=frozenset({"admin"})),
        RouteSpec(
            "/admin/{rest:path}", frozenset({"GET", "POST"}), UP, scopes=frozenset({"admin"})
        ),
        RouteSpec("/public/{rest:path}", frozenset({"GET"}), UP, auth="anonymous"),
        RouteSpec("/v2/beta", frozenset({"GET"}), UP, released=False, error_shape="structured"),
        RouteSpec("/v1/items/{id:int}", frozenset({"GET"}), UP),
        RouteSpec("/v1/items/{id:int}", frozenset({"DELETE"}), UP, scopes=frozenset({"w"})),
    ]
)
ACCOUNT = AccountView(id="a1", email="ann@example.com", locale="fr")


def caller(*scopes: str) -> Principal:
    return Principal(ACCOUNT, AuthMethod.TOKEN, scopes, "t1")


def decide(raw: str, who: Principal | Denied | None, method: str = "GET") -> int:
    path, _ = split_target(raw)
    routed = route(TABLE, method, path)
    if isinstance(routed, Denied):
        return 400 if routed.error in (Error.PATH_REJECTED, Error.BAD_REQUEST) else _status(routed)
    verdict = judge(routed, who)
    return 200 if isinstance(verdict, Allowed) else _status(verdict)


def _status(denied: Denied) -> int:
    return CATALOG[denied.error].status


NO_CREDENTIAL = Denied(Error.MISSING_TOKEN)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.raw)
def test_every_way_of_writing_a_path_is_judged_as_the_one_it_names(variant: Variant) -> None:
    statuses = tuple(
        decide(variant.raw, who) for who in (NO_CREDENTIAL, caller("read"), caller("admin"))
    )

    assert statuses == variant.status


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.judged], ids=lambda v: v.raw)
def test_the_path_matched_is_the_normalised_one(variant: Variant) -> None:
    routed = route(TABLE, "GET", split_target(variant.raw)[0])

    assert isinstance(routed, Routed)
    assert routed.path == variant.judged


def test_the_order_is_404_405_418_401_403() -> None:
    assert decide("/nowhere", None) == 404
    assert decide("/admin", None, method="DELETE") == 405
    assert decide("/v2/beta", NO_CREDENTIAL) == 418  # before the credential
    assert decide("/v1/items/7", NO_CREDENTIAL, method="DELETE") == 401
    assert decide("/v1/items/7", caller("read"), method="DELETE") == 403
    assert decide("/v1/items/7", caller("w"), method="DELETE") == 200


def test_405_lists_every_method_of_every_route_on_the_path_and_head_beside_get() -> None:
    denied = route(TABLE, "PROPFIND", "/v1/items/7")

    assert denied == Denied(Error.METHOD_NOT_ALLOWED, {"Allow": "DELETE, GET, HEAD"})


def test_a_refusal_speaks_in_the_route_s_error_shape() -> None:
    assert route(TABLE, "GET", "/v2/beta") == Denied(Error.NOT_RELEASED, shape="structured")
    assert route(TABLE, "POST", "/v2/beta") == Denied(
        Error.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"}, "structured"
    )


def test_head_is_judged_as_get() -> None:
    routed = route(TABLE, "HEAD", "/admin")

    assert isinstance(routed, Routed)
    assert routed.route_id == "GET /admin"  # the GET's rate policies apply to HEAD too


@pytest.mark.parametrize("method", ["GE T", "", "G\x00", "G(ET)", "X" * 40])
def test_a_method_that_is_not_a_token_is_a_400(method: str) -> None:
    assert route(TABLE, method, "/admin") == Denied(Error.BAD_REQUEST)


def test_methods_are_case_sensitive() -> None:
    """RFC 9110 §9.1: `get` is another method than `GET`."""
    denied = route(TABLE, "get", "/admin")

    assert isinstance(denied, Denied) and denied.error is Error.METHOD_NOT_ALLOWED


def test_an_unmatched_path_is_denied_unless_the_deployment_authenticates_it() -> None:
    assert route(TABLE, "GET", "/elsewhere") == Denied(Error.NOT_FOUND)
    routed = route(TABLE, "GET", "/elsewhere", unmatched="authenticate")

    assert isinstance(routed, Routed)
    assert routed.route is ANY_ROUTE and routed.route_id == "GET *"
    assert isinstance(judge(routed, caller()), Allowed)
    assert judge(routed, NO_CREDENTIAL) == NO_CREDENTIAL


def test_a_public_route_needs_no_credential_and_names_none() -> None:
    routed = route(TABLE, "GET", "/public/x")

    assert isinstance(routed, Routed)
    assert judge(routed, None) == Allowed(routed, None)


def test_a_missing_scope_is_answered_in_the_account_s_language() -> None:
    routed = route(TABLE, "GET", "/admin")
    assert isinstance(routed, Routed)

    assert judge(routed, caller("read")) == Denied(Error.FORBIDDEN, locale="fr")


def test_a_path_parameter_template_covers_its_bare_prefix() -> None:
    assert decide("/public", None) == 200
    assert decide("/publicity", None) == 404
    assert decide("/v1/items/x", None) == 404  # {id:int}


@pytest.mark.parametrize(
    "template", ["/admin/", "//admin", "/a/../b", "/a;b", "/a%2Fb", "/x/{id:float}", "/{a"]
)
def test_a_template_must_be_canonical(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.raw)
def test_a_remembered_route_is_the_route_judged_afresh(variant: Variant) -> None:
    """Issue #13: forward auth remembers `route`'s answers; asked twice (the second from the
    memo), every variant gets exactly the answer `route` gives."""
    memo = RouteMemo(TABLE)
    path, _ = split_target(variant.raw)
    fresh = route(TABLE, "GET", path)
    assert memo("GET", path) == fresh
    assert memo("GET", path) == fresh


def test_the_route_memo_is_bounded_and_keeps_only_short_routed_paths() -> None:
    memo = RouteMemo(TABLE, size=3)
    for i in range(10):
        assert isinstance(memo("GET", f"/v1/items/{i}"), Routed)
        assert len(memo._memo) <= 3
    memo._memo.clear()
    long = "/v1/items/" + "1" * RouteMemo.MAX_PATH
    assert isinstance(memo("GET", long), Routed)
    assert isinstance(memo("GET", "/nowhere"), Denied)
    assert isinstance(memo("GET", "/admin/%2F"), Denied)
    assert memo._memo == {}  # neither a long path nor a refusal is kept
    unmatched = RouteMemo(TABLE, unmatched="authenticate")
    assert unmatched("GET", "/nowhere") == route(TABLE, "GET", "/nowhere", unmatched="authenticate")
