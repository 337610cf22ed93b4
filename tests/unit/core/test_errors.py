"""The error catalog (SPEC E1) and its negotiated representations (E2)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authbus_api.core.errors import CATALOG, HTML, JSON, PROBLEM, Error, negotiate, render


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, HTML),
        ("", HTML),
        ("*/*", HTML),
        ("text/html", HTML),
        ("text/*", HTML),
        ("application/*", HTML),
        ("image/png", HTML),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", HTML),
        ("application/json", JSON),
        ("application/problem+json", PROBLEM),
        ("application/json, */*", JSON),
        ("application/problem+json, application/json", PROBLEM),
        ("application/json;q=0.5, text/html;q=0.9", HTML),
        ("text/html;q=0.1, application/json", JSON),
        ("application/json;q=0", HTML),
        ("application/json;q=0.0, application/problem+json;q=0.2", PROBLEM),
        ("application/json ; q=0.7 , text/html ; q=0.6", JSON),
        ("APPLICATION/JSON", JSON),
        ("Application/Problem+JSON", PROBLEM),
        ("application/json;Q=0.4, text/html;q=0.3", JSON),
    ],
)
def test_negotiate_picks_the_best_offered_representation(accept: str | None, media: str) -> None:
    """E2: HTML by default; JSON or problem+json when asked for, q-values honoured."""
    assert negotiate(accept) == media


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("application/json;q=abc", HTML),
        ("application/json;q=", HTML),
        ("application/json;q=nan", HTML),
        ("application/json;q=-1", HTML),
        ("application/json;q=inf", JSON),
        ("application/json;q=7", JSON),
        ("application/json;q=abc, application/problem+json", PROBLEM),
        (";;;,,,", HTML),
        ("application/json;;;q", HTML),
        ("application/json;;;", JSON),
        ("\x00\xff", HTML),
        ("application/json" + ", x/y" * 100, JSON),
    ],
    ids=repr,
)
def test_negotiate_survives_garbage_q_values(accept: str, media: str) -> None:
    """E5: an unreadable `Accept` is no crash; an unreadable q counts as 0, a big one as 1."""
    assert negotiate(accept) == media


def body(error: Error, accept: str | None, request_id: str | None = None) -> Any:
    rendered = render(error, accept, request_id=request_id)
    return json.loads(rendered.body)


def test_json_simple_shape_has_code_as_a_string_and_the_message() -> None:
    """E2: the seed doc's shape, `{"code": "403", "error": "..."}`."""
    rendered = render(Error.FORBIDDEN, "application/json")

    assert rendered.status == 403
    assert rendered.content_type == JSON
    assert json.loads(rendered.body) == {
        "code": "403",
        "error": "You don't have access to this endpoint.",
    }


@pytest.mark.parametrize("error", list(Error))
def test_json_code_is_the_status_as_a_string_for_every_error(error: Error) -> None:
    simple = body(error, "application/json")

    assert simple["code"] == str(CATALOG[error].status)
    assert isinstance(simple["code"], str)
    assert simple["error"] == CATALOG[error].message


def test_problem_json_has_type_title_status_detail() -> None:
    """E2: RFC 9457."""
    rendered = render(Error.NOT_FOUND, "application/problem+json")

    assert rendered.status == 404
    assert rendered.content_type == PROBLEM
    assert json.loads(rendered.body) == {
        "type": "urn:authbus:error:operation.notFound",
        "title": "Not Found",
        "status": 404,
        "detail": "API endpoint not found.",
    }


def test_html_is_the_default_page_with_status_and_message() -> None:
    rendered = render(Error.TOO_MANY_REQUESTS, None)

    page = rendered.body.decode()
    assert (rendered.status, rendered.content_type) == (429, HTML)
    assert page.startswith("<!doctype html>")
    assert "<h1>429 Too Many Requests</h1>" in page
    assert "Too many requests. Please try again later." in page


def test_html_page_escapes_what_it_shows() -> None:
    page = render(Error.FORBIDDEN, "text/html", request_id='<script>"x"</script>').body.decode()

    assert "<script>" not in page
    assert "&lt;script&gt;&quot;x&quot;&lt;/script&gt;" in page
    assert "You don&#x27;t have access to this endpoint." in page


@pytest.mark.parametrize("accept", ["application/json", "application/problem+json", "text/html"])
def test_internal_error_carries_the_request_id_in_every_shape(accept: str) -> None:
    """E1: a 500 has no internals but a request id."""
    rendered = render(Error.INTERNAL, accept, request_id="req-7f3a")

    assert rendered.status == 500
    assert b"req-7f3a" in rendered.body
    if accept != "text/html":
        assert json.loads(rendered.body)["requestId"] == "req-7f3a"


@pytest.mark.parametrize("accept", ["application/json", "application/problem+json"])
def test_no_request_id_field_without_a_request_id(accept: str) -> None:
    assert "requestId" not in body(Error.INTERNAL, accept)


def test_every_error_has_a_catalog_entry_with_a_unique_error_id() -> None:
    assert set(CATALOG) == set(Error)
    ids = [entry.error_id for entry in CATALOG.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("error", "status", "error_id"),
    [
        (Error.BAD_REQUEST, 400, None),
        (Error.MISSING_TOKEN, 401, None),
        (Error.INVALID_TOKEN, 401, None),
        (Error.FORBIDDEN, 403, "action.forbidden"),
        (Error.NOT_FOUND, 404, "operation.notFound"),
        (Error.METHOD_NOT_ALLOWED, 405, "method.notAllowed"),
        (Error.NOT_RELEASED, 418, None),
        (Error.TOO_MANY_REQUESTS, 429, None),
        (Error.LOGIN_THROTTLED, 429, "auth.throttled"),
        (Error.INTERNAL, 500, "error.unknown"),
    ],
)
def test_catalog_has_the_spec_statuses_and_stable_ids(
    error: Error, status: int, error_id: str | None
) -> None:
    """E1 statuses; E2 names some errorIds outright."""
    entry = CATALOG[error]

    assert entry.status == status
    if error_id is not None:
        assert entry.error_id == error_id
    assert entry.message
    assert entry.title


@pytest.mark.parametrize("error", list(Error))
def test_internal_details_never_reach_the_body(error: Error) -> None:
    page = render(error, None).body.decode()

    assert "Traceback" not in page
    assert "Exception" not in page


def test_login_throttled_is_a_429_of_its_own_not_the_rate_limit() -> None:
    """A10: throttled sign-in attempts answer 429 `auth.throttled`, told apart from R1-R3's
    `rate.exceeded` so a client knows which wait it is in."""
    problem = body(Error.LOGIN_THROTTLED, "application/problem+json")

    assert problem["status"] == 429
    assert problem["type"] == "urn:authbus:error:auth.throttled"
    assert problem["detail"] != CATALOG[Error.TOO_MANY_REQUESTS].message


def test_the_structured_json_shape_carries_the_stable_id_and_the_message() -> None:
    """E2: the deployment may choose {"error": {"errorId", "errorMessage"}} for JSON."""
    rendered = render(Error.NOT_FOUND, "application/json", shape="structured")
    crashed = render(Error.INTERNAL, "application/json", shape="structured", request_id="r1")

    assert json.loads(rendered.body) == {
        "error": {"errorId": "operation.notFound", "errorMessage": "API endpoint not found."}
    }
    assert json.loads(crashed.body)["error"]["requestId"] == "r1"
    assert rendered.content_type == "application/json"


def test_messages_and_titles_are_translated_in_every_representation() -> None:
    """E3: the negotiated language reaches JSON, problem+json and the HTML page."""
    french = {
        "Too many requests. Please try again later.": "Trop de requêtes.",
        "Too Many Requests": "Trop de requêtes",
    }.get

    def translate(text: str) -> str:
        return french(text) or text

    as_json = render(
        Error.TOO_MANY_REQUESTS, "application/json", language="fr", translate=translate
    )
    problem = render(
        Error.TOO_MANY_REQUESTS, "application/problem+json", language="fr", translate=translate
    )
    page = render(Error.TOO_MANY_REQUESTS, None, language="fr", translate=translate)

    assert json.loads(as_json.body)["error"] == "Trop de requêtes."
    assert json.loads(problem.body)["title"] == "Trop de requêtes"
    assert '<html lang="fr">' in page.body.decode()
    assert {as_json.language, problem.language, page.language} == {"fr"}
