"""The management API over HTTP (SPEC G1, A8) with a twin of authz's command side: what each
route sends, what it answers, and how authz's refusals map to the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from authbus_api.core.errors import CATALOG, Error
from authbus_shared.contracts.authz import (
    RequestFailed,
)
from authbus_shared.contracts.commands import (
    AccountRef,
    CommandRejected,
    GrantScopes,
    ListTokens,
    RevokeToken,
    SealedLogin,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.kafka.rpc import RpcTimeout
from tests.manage_twins import (
    ADMIN,
    ENGLISH,
    JSON,
    KEY,
    PASSWORD,
    TOKEN,
    URI,
    CommandsTwin,
    build,
)


@pytest.fixture
def commands() -> CommandsTwin:
    return CommandsTwin()


@pytest.fixture
async def client(commands: CommandsTwin) -> AsyncIterator[httpx.AsyncClient]:
    async with build(commands) as c:
        yield c


async def test_sign_up_creates_an_account(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    body = {"email": "bo@example.com", "password": "long enough", "locale": "de"}
    response = await client.post("/v0/accounts", json=body, headers=JSON)

    assert response.status_code == 201
    assert response.json() == {"id": "acc-9", "email": "bo@example.com", "locale": "de"}
    assert commands.asked == [("create_account", "bo@example.com", "long enough", "de")]
    assert response.headers["ratelimit-policy"] == '"anonymous";q=60;w=60'  # R6


async def test_admin_only_sign_up_needs_an_admin_token(commands: CommandsTwin) -> None:
    async with build(commands, signup="admin") as client:
        body = {"email": "bo@example.com", "password": "pw"}
        without = await client.post("/v0/accounts", json=body, headers=JSON)
        not_admin = await client.post("/v0/accounts", json=body, headers=TOKEN)

    assert without.status_code == 401
    assert (not_admin.status_code, not_admin.json()["code"]) == (403, "403")
    assert commands.asked == []


async def test_a_token_is_created_by_logging_in_and_shown_once(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    body = {"email": "ann@example.com", "password": "pw", "code": "123456", "name": "ci"}
    response = await client.post("/v0/tokens", json=body, headers=JSON)

    assert response.status_code == 201
    created = response.json()
    assert (created["secret"], created["id"], created["two_factor"]) == ("the-token", "t9", True)
    assert commands.asked == [
        SealedLogin(email="ann@example.com", password="pw", totp_code="123456")
    ]


@pytest.mark.parametrize(
    ("refusal", "status", "extra"),
    [
        (CommandRejected(reason="invalid_credentials"), 401, {}),
        (CommandRejected(reason="totp_required"), 401, {}),
        (CommandRejected(reason="throttled", retry_after_s=17), 429, {"retry-after": "17"}),
        (RequestFailed(reason="unavailable"), 503, {"retry-after": "1"}),
        (RpcTimeout("no reply"), 503, {"retry-after": "1"}),
    ],
)
async def test_refusals_map_to_the_catalog(
    client: httpx.AsyncClient,
    commands: CommandsTwin,
    refusal: Contract | Exception,
    status: int,
    extra: dict[str, str],
) -> None:
    commands.next = refusal
    body = {"email": "ann@example.com", "password": "pw", "name": "ci"}

    response = await client.post("/v0/tokens", json=body, headers=JSON)

    assert response.status_code == status
    assert response.json()["code"] == str(status)
    assert response.headers.items() >= extra.items()


async def test_tokens_are_listed_and_revoked_for_the_callers_own_account(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    listed = await client.get("/v0/tokens", headers=TOKEN)
    revoked = await client.delete("/v0/tokens/t1", headers=TOKEN)
    commands.next = CommandRejected(reason="unknown_token")
    unknown = await client.delete("/v0/tokens/elsewhere", headers=TOKEN)

    assert listed.status_code == 200
    assert [t["token_id"] for t in listed.json()["tokens"]] == ["t1"]
    assert "the-token" not in listed.text
    assert revoked.status_code == 204
    assert (unknown.status_code, unknown.json()["code"]) == (404, "404")
    assert commands.asked[0] == ListTokens(account=AccountRef(account_id="acc-1"))
    assert commands.asked[1] == RevokeToken(token_id="t1", account_id="acc-1")


async def test_a_key_is_created_with_the_deprecation_header(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    response = await client.post("/v0/keys", json={"name": "legacy"}, headers=TOKEN)

    assert response.status_code == 201
    assert response.json()["secret"] == "abk_the-key"
    assert response.headers["deprecation"] == "@1704067200"
    assert commands.asked == [("create_key", AccountRef(account_id="acc-1"), (), ("read",))]


# --- scopes (A8) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "within"),
    [(TOKEN, ("read",)), (KEY, ("write",)), (PASSWORD, None)],
    ids=["token", "key", "password"],
)
async def test_a_new_key_is_bounded_by_the_callers_token_or_key_but_a_password_by_the_grant(
    client: httpx.AsyncClient,
    commands: CommandsTwin,
    headers: dict[str, str],
    within: tuple[str, ...] | None,
) -> None:
    body = {"name": "legacy", "scopes": ["read", "write"]}

    response = await client.post("/v0/keys", json=body, headers=headers)

    assert response.status_code == 201
    assert commands.asked == [
        ("create_key", AccountRef(account_id="acc-1"), ("read", "write"), within)
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v0/tokens", {"email": "ann@example.com", "password": "pw", "name": "ci"}, JSON),
        ("/v0/keys", {"name": "legacy", "scopes": ["admin"]}, TOKEN),
    ],
    ids=["token", "key"],
)
async def test_a_scope_not_granted_is_a_403_that_says_so(
    client: httpx.AsyncClient,
    commands: CommandsTwin,
    path: str,
    body: dict[str, object],
    headers: dict[str, str],
) -> None:
    commands.next = CommandRejected(reason="scope_not_granted", detail="admin")

    response = await client.post(path, json=body, headers=headers | ENGLISH)

    assert response.status_code == 403
    assert response.json()["error"] == CATALOG[Error.SCOPE_NOT_GRANTED].message


async def test_an_admin_replaces_an_accounts_grant_and_sees_the_result(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    body = {"scopes": ["write", "read"]}

    response = await client.put("/v0/accounts/acc-7/scopes", json=body, headers=ADMIN)

    assert response.status_code == 200
    assert response.json() == {"account_id": "acc-7", "scopes": ["read", "write"]}
    assert commands.asked == [
        GrantScopes(account=AccountRef(account_id="acc-7"), exactly=("write", "read"))
    ]


@pytest.mark.parametrize(
    ("headers", "error"),
    [(TOKEN, Error.FORBIDDEN), (PASSWORD, Error.FORBIDDEN), (JSON, Error.MISSING_TOKEN)],
    ids=["token-without-admin", "password-without-admin", "anonymous"],
)
async def test_changing_a_grant_needs_the_admin_scope(
    client: httpx.AsyncClient, commands: CommandsTwin, headers: dict[str, str], error: Error
) -> None:
    response = await client.put(
        "/v0/accounts/acc-1/scopes", json={"scopes": ["admin"]}, headers=headers | ENGLISH
    )

    assert response.status_code == CATALOG[error].status
    assert response.json()["error"] == CATALOG[error].message
    assert commands.asked == []


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (CommandRejected(reason="unknown_account"), 404),
        (CommandRejected(reason="invalid_input"), 400),
    ],
)
async def test_a_refused_grant_maps_to_the_catalog(
    client: httpx.AsyncClient, commands: CommandsTwin, refusal: CommandRejected, status: int
) -> None:
    commands.next = refusal

    response = await client.put("/v0/accounts/nope/scopes", json={"scopes": ["x"]}, headers=ADMIN)

    assert (response.status_code, response.json()["code"]) == (status, str(status))


async def test_2fa_enrolment_gives_the_uri_and_a_qr_code(client: httpx.AsyncClient) -> None:
    response = await client.post("/v0/2fa", headers=TOKEN)

    assert response.status_code == 201
    enrolment = response.json()
    assert enrolment["otpauth_uri"] == URI
    assert enrolment["qr_svg"].startswith("<svg") and "</svg>" in enrolment["qr_svg"]


async def test_2fa_confirmation_and_a_wrong_code(
    client: httpx.AsyncClient, commands: CommandsTwin
) -> None:
    confirmed = await client.post("/v0/2fa/confirm", json={"code": "123456"}, headers=TOKEN)
    commands.next = CommandRejected(reason="invalid_code")
    wrong = await client.post("/v0/2fa/disable", json={"code": "000000"}, headers=TOKEN)

    assert confirmed.status_code == 204
    assert (wrong.status_code, wrong.json()["code"]) == (400, "400")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v0/tokens", {"email": "a@b.c"}),  # no password, no name
        ("/v0/tokens", {"email": "a@b.c", "password": "p", "name": "n", "extra": 1}),
        ("/v0/accounts", ["not", "an", "object"]),
        ("/v0/2fa/confirm", {"code": "1"}),
    ],
)
async def test_malformed_bodies_are_a_400_never_a_500(
    client: httpx.AsyncClient, path: str, body: object
) -> None:
    response = await client.post(path, json=body, headers=TOKEN)

    assert (response.status_code, response.json()["code"]) == (400, "400")


async def test_the_openapi_document_lists_the_management_api(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/v0/openapi.json")).json()["paths"]

    assert {"/v0/accounts", "/v0/tokens", "/v0/keys", "/v0/2fa", "/v0/me"} <= set(paths)
