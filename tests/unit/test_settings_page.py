"""The settings page (issue #12, ADR 0018) over HTTP with a twin of authz's command side: the
session cookie is the page's only credential and nothing else's, its flags, the CSRF lock on
every form, and what each form sends to authz. The whole flow in a real browser against the
real processes: `tests/e2e/test_settings_in_a_browser.py`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authbus_api.core.sessions import Sessions, cookie_value, csrf_ok, csrf_token, lifetime_s
from authbus_shared.contracts.authz import AccountView
from authbus_shared.contracts.commands import (
    AccountInfo,
    AccountRef,
    CommandRejected,
    GetAccount,
    RevokeToken,
    SealedLogin,
    SealedPasswordChange,
)
from authbus_shared.contracts.envelope import Contract, utcnow
from tests import manage_twins
from tests.manage_twins import CommandsTwin

SESSION = "__Host-authbus_session"
NONCE = "__Host-authbus_presession"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept-Language": "en"}


@dataclass
class PageCommands(CommandsTwin):
    """The management twin, also answering the page's read of the account."""

    grant: tuple[str, ...] = ("read", "write")
    totp: bool = False

    async def ask(self, command: Contract, key: str) -> Contract:
        if isinstance(command, GetAccount):
            self.asked.append(command)
            account = AccountView(id="acc-1", email="ann@example.com", locale="fr")
            return AccountInfo(
                account=account,
                scopes=self.grant,
                totp_enabled=self.totp,
                disabled=False,
                created_at=utcnow(),
            )
        return await super().ask(command, key)


def build(
    commands: CommandsTwin, sessions: Sessions | None = None, *, limited: bool = True
) -> httpx.AsyncClient:
    return manage_twins.build(commands, sessions=sessions, limited=limited, base_url="https://api")


@pytest.fixture
def commands() -> PageCommands:
    return PageCommands()


@pytest.fixture
async def client(commands: PageCommands) -> AsyncIterator[httpx.AsyncClient]:
    async with build(commands) as c:
        yield c


def signed_in(session: str = "good") -> dict[str, str]:
    return {**FORM, "Cookie": f"{SESSION}={session}"}


# --- the session: where it counts, its flags -------------------------------------------------


async def test_a_page_without_a_session_sends_to_the_sign_in_form(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/settings")

    assert response.status_code == 303
    assert response.headers["location"] == "/settings/sign-in"
    assert response.headers["set-cookie"].startswith(f"{SESSION}=; Max-Age=0")


@pytest.mark.parametrize(
    "cookie",
    [
        f"{SESSION}=revoked-or-unknown",  # authz says invalid: expired, revoked, forged
        f"{SESSION}=good; {SESSION}=good",  # twice: ambiguous (cookie tossing)
        f"{SESSION}=go<od",  # not a token's characters
        "authbus_session=good",  # the plain-http name, on a Secure deployment
    ],
)
async def test_a_session_that_is_not_exactly_one_valid_token_is_no_session(
    client: httpx.AsyncClient, cookie: str
) -> None:
    response = await client.get("/settings", headers={"Cookie": cookie})

    assert response.status_code == 303
    assert response.headers["location"] == "/settings/sign-in"


async def test_only_the_cookie_counts_on_the_pages_and_only_authorization_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    """A browser sends Basic credentials it once prompted for on its own: on the pages they
    would be an ambient credential no CSRF token guards. The cookie is no API credential."""
    bearer_on_page = await client.get("/settings", headers={"Authorization": "Bearer good"})
    cookie_on_api = await client.get("/v0/me", headers={"Cookie": f"{SESSION}=good"})

    assert bearer_on_page.status_code == 303
    assert cookie_on_api.status_code == 401


async def test_the_signed_in_page_lists_tokens_and_marks_this_session(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/settings", headers=signed_in())

    assert response.status_code == 200
    assert "ann@example.com" in response.text
    row = re.search(r"<tr class=\"current\">(.*?)</tr>", response.text, re.S)
    assert row is not None
    assert "ci" in row.group(1)
    assert "this session" in row.group(1)
    assert f'value="{csrf_token("good")}"' in response.text
    assert 'value="read"' in response.text and 'value="write"' in response.text  # the grant
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "ratelimit-policy" in response.headers  # the account's limits, as on the API


async def test_signing_in_is_a_login_and_sets_a_strict_session_cookie(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    form = await client.get("/settings/sign-in", headers=FORM)
    nonce = cookie_value(form.headers["set-cookie"].split(";")[0], NONCE)
    assert nonce is not None
    assert f'value="{csrf_token(nonce)}"' in form.text

    body = {"csrf": csrf_token(nonce), "email": "ann@example.com", "password": "pw", "code": ""}
    headers = {**FORM, "Cookie": f"{NONCE}={nonce}"}
    response = await client.post("/settings/sign-in", data=body, headers=headers)

    assert response.status_code == 303
    assert response.headers["location"] == "/settings"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION}=the-token;")
    assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/"} <= {
        p.strip() for p in cookie.split(";")
    }
    assert "Domain" not in cookie
    assert commands.asked == [SealedLogin(email="ann@example.com", password="pw")]


@pytest.mark.parametrize(
    ("refusal", "status", "says"),
    [
        (CommandRejected(reason="invalid_credentials"), 401, "Email or password incorrect."),
        (CommandRejected(reason="totp_required"), 401, "a current code is needed"),
        (CommandRejected(reason="throttled", retry_after_s=7), 429, "Too many failed sign-in"),
    ],
)
async def test_a_refused_sign_in_shows_the_form_again_with_why(
    client: httpx.AsyncClient,
    commands: PageCommands,
    refusal: CommandRejected,
    status: int,
    says: str,
) -> None:
    commands.next = refusal
    body = {"csrf": csrf_token("n0nce"), "email": "ann@example.com", "password": "pw"}
    headers = {**FORM, "Cookie": f"{NONCE}=n0nce"}
    response = await client.post("/settings/sign-in", data=body, headers=headers)

    assert response.status_code == status
    assert says in response.text
    assert 'value="ann@example.com"' in response.text
    assert "set-cookie" not in response.headers  # no session; the nonce is kept
    assert response.headers.get("retry-after") == ("7" if status == 429 else None)


async def test_plain_http_drops_secure_and_the_host_prefix() -> None:
    async with build(PageCommands(), Sessions(secure=False)) as client:
        response = await client.get("/settings/sign-in")

    cookie = response.headers["set-cookie"]
    assert cookie.startswith("authbus_presession=")
    assert "Secure" not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


# --- CSRF: every POST ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/settings/tokens", {"name": "x", "expiry": "30", "password": "pw"}),
        ("/settings/password", {"current": "pw", "new": "n" * 9, "confirm": "n" * 9}),
        ("/settings/tokens/t1/revoke", {}),
        ("/settings/2fa", {}),
        ("/settings/2fa/disable", {"code": "123456"}),
        ("/settings/sign-out", {}),
    ],
)
@pytest.mark.parametrize("csrf", [None, "0" * 64, csrf_token("another session")])
async def test_a_post_without_the_sessions_csrf_token_does_nothing(
    client: httpx.AsyncClient,
    commands: PageCommands,
    path: str,
    extra: dict[str, str],
    csrf: str | None,
) -> None:
    body = extra if csrf is None else {**extra, "csrf": csrf}
    response = await client.post(path, data=body, headers={**signed_in(), "Accept": "*/*"})

    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert commands.asked == []


async def test_a_post_the_browser_says_came_from_another_site_is_refused(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {"csrf": csrf_token("good")}
    headers = {**signed_in(), "Sec-Fetch-Site": "cross-site"}
    response = await client.post("/settings/sign-out", data=body, headers=headers)

    assert response.status_code == 403
    assert commands.asked == []


async def test_a_sign_in_without_its_nonce_is_refused(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {"csrf": csrf_token("guessed"), "email": "ann@example.com", "password": "pw"}
    response = await client.post("/settings/sign-in", data=body, headers=FORM)

    assert response.status_code == 403
    assert commands.asked == []


# --- what the forms do -----------------------------------------------------------------------


async def test_creating_a_token_asks_for_the_password_and_shows_the_secret_once(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {
        "csrf": csrf_token("good"),
        "name": "deploy",
        "expiry": "7",
        "scopes": ["read"],
        "password": "pw",
    }
    response = await client.post("/settings/tokens", data=body, headers=signed_in())

    assert response.status_code == 200
    assert 'value="the-token"' in response.text
    assert "will not be shown again" in response.text
    assert commands.asked == [SealedLogin(email="ann@example.com", password="pw")]


async def test_a_token_form_with_a_past_date_is_shown_again_with_why(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {
        "csrf": csrf_token("good"),
        "name": "x",
        "expiry": "date",
        "expires_on": "2001-01-01",
        "password": "pw",
    }
    response = await client.post("/settings/tokens", data=body, headers=signed_in())

    assert response.status_code == 400
    assert "expiry date from tomorrow on" in response.text
    assert not any(isinstance(a, SealedLogin) for a in commands.asked)


async def test_revoking_asks_first_then_revokes(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    confirm = await client.get("/settings/tokens/t1/revoke", headers=signed_in())
    assert confirm.status_code == 200
    assert "Revoke this token?" in confirm.text
    assert not any(isinstance(a, RevokeToken) for a in commands.asked)

    body = {"csrf": csrf_token("good")}
    done = await client.post("/settings/tokens/t1/revoke", data=body, headers=signed_in())

    assert any(isinstance(a, RevokeToken) and a.token_id == "t1" for a in commands.asked)
    assert done.status_code == 303  # t1 is this session: signed out
    assert done.headers["location"] == "/settings/sign-in?done=signed-out"
    assert done.headers["set-cookie"].startswith(f"{SESSION}=; Max-Age=0")


async def test_an_unknown_token_has_no_revoke_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/settings/tokens/nope/revoke", headers=signed_in())

    assert response.status_code == 404


async def test_changing_the_password_signs_out(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {"csrf": csrf_token("good"), "current": "pw", "new": "n" * 9, "confirm": "n" * 9}
    response = await client.post("/settings/password", data=body, headers=signed_in())

    assert response.status_code == 303
    assert response.headers["location"] == "/settings/sign-in?done=password-changed"
    assert commands.asked == [
        SealedPasswordChange(email="ann@example.com", current="pw", new="n" * 9)
    ]


async def test_different_new_passwords_are_not_sent(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    body = {"csrf": csrf_token("good"), "current": "pw", "new": "n" * 9, "confirm": "m" * 9}
    response = await client.post("/settings/password", data=body, headers=signed_in())

    assert response.status_code == 400
    assert "confirmation differ" in response.text
    assert not any(isinstance(a, SealedPasswordChange) for a in commands.asked)


async def test_turning_2fa_on_shows_the_qr_code_and_the_key(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/settings/2fa", data={"csrf": csrf_token("good")}, headers=signed_in()
    )

    assert response.status_code == 200
    assert "<svg" in response.text
    assert "JBSW Y3DP EHPK 3PXP" in response.text


@pytest.mark.parametrize(("action", "done"), [("confirm", "2fa-on"), ("disable", "2fa-off")])
async def test_a_code_turns_2fa_on_and_off(
    client: httpx.AsyncClient, commands: PageCommands, action: str, done: str
) -> None:
    body = {"csrf": csrf_token("good"), "code": "123 456"}
    response = await client.post(f"/settings/2fa/{action}", data=body, headers=signed_in())

    assert response.status_code == 303
    assert response.headers["location"] == f"/settings?done={done}"
    assert commands.asked[-1] == (AccountRef(account_id="acc-1"), "123456")


async def test_a_wrong_code_leaves_2fa_as_it_was_and_says_why(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    commands.next = CommandRejected(reason="invalid_code")
    body = {"csrf": csrf_token("good"), "code": "000000"}
    response = await client.post("/settings/2fa/confirm", data=body, headers=signed_in())

    assert response.status_code == 400
    assert "The code is wrong or was already used." in response.text
    assert 'action="/settings/2fa/confirm"' in response.text  # another code may confirm


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"csrf": "x"}'),
        (FORM, b"csrf=%ff%fe"),  # not UTF-8
        (FORM, b"&".join(b"f%d=1" % i for i in range(100))),  # too many fields
    ],
)
async def test_a_form_that_is_not_a_form_is_a_400(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> None:
    response = await client.post(
        "/settings/sign-out", content=body, headers={**headers, "Cookie": f"{SESSION}=good"}
    )

    assert response.status_code == 400


async def test_the_pages_speak_the_clients_language(client: httpx.AsyncClient) -> None:
    response = await client.get("/settings/sign-in", headers={"Accept-Language": "fr"})

    assert '<html lang="fr">' in response.text
    assert "Se connecter" in response.text
    assert response.headers["content-language"] == "fr"


async def test_the_pages_own_files_are_served_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    css = await client.get("/settings/assets/settings.css")
    other = await client.get("/settings/assets/..%2F..%2Fapp.py")

    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert other.status_code in (400, 404)


# --- the pure rules --------------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("choice", "on", "expected"),
    [
        ("7", None, 7 * 86400),
        ("90", None, 90 * 86400),
        ("never", None, None),
        ("date", "2026-12-01", 12 * 3600),  # 00:00 UTC on that day
    ],
)
def test_a_tokens_lifetime_from_the_form(choice: str, on: str | None, expected: int | None) -> None:
    assert lifetime_s(choice, on, NOW) == expected


@pytest.mark.parametrize(
    ("choice", "on"),
    [("8", None), ("date", "2026-11-30"), ("date", "2040-01-01"), ("date", "soon"), ("x", None)],
)
def test_a_lifetime_outside_the_choices_is_refused(choice: str, on: str | None) -> None:
    assert isinstance(lifetime_s(choice, on, NOW), ValueError)


def test_csrf_tokens_bind_to_their_basis() -> None:
    token = csrf_token("session-a")

    assert csrf_ok("session-a", token, None)
    assert csrf_ok("session-a", token, "same-origin")
    assert not csrf_ok("session-b", token, None)
    assert not csrf_ok("session-a", token, "same-site")  # a sibling subdomain
    assert not csrf_ok(None, token, None)
    assert not csrf_ok("session-a", None, None)
    assert csrf_token("session-a") != csrf_token("session-a" + "x")
    assert timedelta(seconds=Sessions().lifetime_s) == timedelta(hours=1)


# --- whatever a form holds: never a 500 ------------------------------------------------------

POSTS = (
    "/settings/sign-in",
    "/settings/sign-up",
    "/settings/tokens",
    "/settings/password",
    "/settings/2fa",
    "/settings/2fa/confirm",
    "/settings/2fa/disable",
    "/settings/2fa/elsewhere",
    "/settings/tokens/t1/revoke",
    "/settings/keys/k1/revoke",
    "/settings/spoons/t1/revoke",
    "/settings/sign-out",
)
FIELD_NAMES = st.sampled_from(
    ["name", "expiry", "expires_on", "scopes", "password", "code", "email", "current", "new",
     "confirm", "csrf", "other"]
)  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["7", "30", "90", "date", "never", "2099-01-01", "2027-02-30", "123456"]),
    st.text(min_size=1000, max_size=1100),
)


SHARED = PageCommands()  # one app for every example (building one compiles the catalogs)
SHARED_CLIENT = build(SHARED, limited=False)  # rate limits are not what this test is about


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(POSTS),
    fields=st.lists(st.tuples(FIELD_NAMES, VALUES), max_size=10),
    refusal=st.sampled_from([None, "invalid_credentials", "weak_password", "invalid_code"]),
)
async def test_no_form_makes_a_500(
    path: str, fields: list[tuple[str, str]], refusal: str | None
) -> None:
    """Any fields, any values, a CSRF token that passes, and authz answering yes or no: the
    answer is a page, a redirect, the catalog's 4xx, or its 503 where the twin has no answer
    for a command (as when authz is silent), never a 500."""
    SHARED.asked.clear()
    SHARED.next = CommandRejected(reason=refusal) if refusal else None  # type: ignore[arg-type]
    signed = not path.startswith(("/settings/sign-in", "/settings/sign-up"))
    basis = "good" if signed else "n0nce"
    cookie = f"{SESSION}=good" if signed else f"{NONCE}=n0nce"
    body = [("csrf", csrf_token(basis)), *((k, v) for k, v in fields if k != "csrf")]
    content = urlencode(body).encode()
    response = await SHARED_CLIENT.post(path, content=content, headers={**FORM, "Cookie": cookie})

    assert response.status_code != 500, response.text


async def test_every_code_field_is_labelled_and_required_except_at_sign_in(
    client: httpx.AsyncClient, commands: PageCommands
) -> None:
    """The authenticator-code field comes from one macro (`_fields.html`)."""
    commands.totp = True
    sign_in = (await client.get("/settings/sign-in")).text
    field = re.search(r'<input id="code" name="code"[^>]*>', sign_in)
    assert field is not None and "required" not in field.group(0)
    assert '<label for="code">' in sign_in
    page = (await client.get("/settings", headers=signed_in())).text
    fields = list(re.finditer(r'<input id="([\w-]+)" name="code"[^>]*>', page))
    assert [f.group(1) for f in fields] == ["create-code", "disable-code", "password-code"]
    for found in fields:
        assert " required" in found.group(0)
        assert f'<label for="{found.group(1)}">' in page
