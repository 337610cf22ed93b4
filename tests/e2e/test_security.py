"""The security suite (issue #3), over HTTP against the real processes: every attack gets its
denial from the catalog, the same on every api instance, and never a 500 (SPEC A1-A6, A9, E5).

Attacks that need authz's private key to mount (a validly signed token with a wrong `aud`,
`iss` or `nbf`) are pinned by the unit tests of `tokens.check_signature`; here the attacker
has what an attacker has: the public JWKS, tokens they were given, and the wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authbus_authz.admin import AdminSettings, connected
from authbus_shared.authz_client import AuthzClient, Secret
from authbus_shared.contracts.commands import AccountRef, SealedLogin, SealedPasswordChange
from authbus_shared.contracts.events import AccountChanged
from authbus_shared.settings import KafkaSettings
from tests.e2e.conftest import PASSWORD, System

JSON = {"Accept": "application/json"}
INVALID = {"code": "401", "error": "API token invalid."}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return decoded


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return unb64(header), unb64(payload), signature


def part(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{part(header)}.{part(payload)}.{signature}"


def a_client() -> dict[str, str]:
    """A client address of its own (loopback is a trusted proxy). Failed logins are throttled
    per client and account (A10: a pair is held back after 3 failures), so each probe with a
    wrong password comes from another address, as the checks here are of the answer, not of
    the throttle (its own tests are in tests/unit/core/test_throttle.py and below)."""
    return {"X-Forwarded-For": f"198.51.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"}


def me(system: System, headers: dict[str, str], instance: int = 0) -> httpx.Response:
    return httpx.get(
        f"{system.apis()[instance].url}/v0/me",
        headers={**headers, **JSON, **a_client()},
        timeout=10,
    )


def refused_everywhere(
    system: System, headers: dict[str, str], body: dict[str, str] = INVALID, within_s: float = 0.0
) -> None:
    """401 with `body` on every api instance (within `within_s`: changes are broadcast)."""
    deadline = time.monotonic() + within_s
    for i in range(len(system.apis())):
        answer = me(system, headers, i)
        while answer.status_code != 401 and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = me(system, headers, i)
        assert answer.status_code == 401, answer.text
        assert answer.json() == body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def authz(system: System) -> Any:
    kafka = KafkaSettings(
        bootstrap_servers=system.fleet.infra.bootstrap, topic_prefix=system.topic_prefix
    )
    return connected(AdminSettings(kafka=kafka, timeout_s=15))


@pytest.fixture(scope="module")
def victim(system: System) -> dict[str, str]:
    email = system.new_account()
    issued = system.new_token(email, "read")
    return {"email": email, "token": issued["token"], "token_id": issued["token_id"]}


def test_alg_none_is_refused(system: System, victim: dict[str, str]) -> None:
    header, payload, _ = segments(victim["token"])

    refused_everywhere(system, bearer(forge(header | {"alg": "none"}, payload)))
    refused_everywhere(system, bearer(forge(header | {"alg": "none"}, payload) + "x"))


def test_hs256_signed_with_the_published_public_key_is_refused(
    system: System, victim: dict[str, str]
) -> None:
    """The classic key-confusion attack: HMAC with the verification key as the secret."""
    header, payload, _ = segments(victim["token"])
    jwk = next(
        k
        for k in httpx.get(f"{system.apis()[0].url}/.well-known/jwks.json").json()["keys"]
        if k["kid"] == header["kid"]
    )
    public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        secret = public.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
        unsigned = forge(header | {"alg": "HS256"}, payload | {"scope": "admin"})
        signing_input = unsigned.rsplit(".", 1)[0].encode()
        signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())

        refused_everywhere(system, bearer(unsigned + signature))


def test_tampered_claims_and_a_stripped_expiry_are_refused(system: System) -> None:
    email = system.new_account()
    token = system.admin("token", "create", email, "--name", "short", "--expires-in", "3600")[
        "token"
    ]
    header, payload, signature = segments(token)
    assert "exp" in payload

    refused_everywhere(
        system, bearer(forge(header, {k: v for k, v in payload.items() if k != "exp"}, signature))
    )
    refused_everywhere(system, bearer(forge(header, payload | {"scope": "admin"}, signature)))
    refused_everywhere(system, bearer(forge(header, payload | {"sub": "someone-else"}, signature)))


def test_a_token_signed_by_another_key_or_naming_strange_keys_is_refused(
    system: System, victim: dict[str, str]
) -> None:
    header, payload, _ = segments(victim["token"])
    attacker = ec.generate_private_key(ec.SECP256R1())
    for kid in (
        header["kid"],
        "unknown-kid",
        "../../../../etc/passwd",
        "https://attacker.example/jwks.json",
    ):
        extra = {
            "kid": kid,
            "jku": "https://attacker.example/jwks.json",
            "x5u": "file:///etc/passwd",
        }
        token = jwt.encode(payload, attacker, algorithm="ES256", headers=extra)

        refused_everywhere(system, bearer(token))


def test_an_expired_token_is_refused(system: System) -> None:
    email = system.new_account()
    token = system.admin("token", "create", email, "--name", "brief", "--expires-in", "1")["token"]
    time.sleep(2.1)

    refused_everywhere(system, bearer(token))


def test_a_token_issued_before_a_password_change_stops_working_everywhere(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email)["token"]
    for i in range(len(system.apis())):
        assert me(system, bearer(token), i).status_code == 200  # cached as valid on both

    async def change() -> object:
        async with authz(system) as client:
            return await client.change_password(
                SealedPasswordChange(email=email, current=PASSWORD, new="a new long passphrase")
            )

    changed = asyncio.run(change())

    assert isinstance(changed, AccountChanged)
    refused_everywhere(system, bearer(token), within_s=5)
    refused_everywhere(system, basic(email, PASSWORD))
    assert me(system, basic(email, "a new long passphrase")).status_code == 200


def test_a_totp_code_is_good_once_and_2fa_refuses_passwords(system: System) -> None:
    email = system.new_account()

    async def flow(client: AuthzClient) -> tuple[object, ...]:
        me_ = AccountRef(email=email)
        enrolment = await client.enroll_totp(me_)
        assert isinstance(enrolment, Secret)
        totp = pyotp.parse_uri(enrolment.value)
        assert isinstance(totp, pyotp.TOTP)
        code = totp.now()
        confirmed = await client.confirm_totp(me_, code)
        reused = await client.create_token(
            SealedLogin(email=email, password=PASSWORD, totp_code=code), name="x"
        )
        return confirmed, reused

    async def run() -> tuple[object, ...]:
        async with authz(system) as client:
            return await flow(client)

    confirmed, reused = asyncio.run(run())

    assert isinstance(confirmed, AccountChanged)
    assert getattr(reused, "reason", None) == "invalid_code"
    answer = me(system, basic(email, PASSWORD))
    assert answer.status_code == 401
    assert "use an API token" in answer.json()["error"]


def test_long_passwords_that_differ_only_at_the_end_are_different(system: System) -> None:
    long = "p" * 100 + "-ends-here"  # over bcrypt's 72 bytes: argon2 reads all of it
    email = system.new_account(long)

    assert me(system, basic(email, long)).status_code == 200
    refused_everywhere(system, basic(email, long[:-1] + "X"))
    refused_everywhere(system, basic(email, long[:72]))


def test_unknown_email_and_wrong_password_look_the_same(system: System) -> None:
    email = system.new_account()

    wrong = me(system, basic(email, "not the password"))
    unknown = me(system, basic("nobody-" + email, "not the password"))

    assert (wrong.status_code, wrong.content) == (unknown.status_code, unknown.content)
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]
    assert wrong.headers["content-type"] == unknown.headers["content-type"]


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!not base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe\xfd:\xff").decode(),
        "Basic " + base64.b64encode(b"a@b.io/key:abk_not-a-real-key").decode(),
        "Bearer",
        "Bearer a b c",
        "Negotiate abc",
        "Bearer " + "A" * 9000,
    ],
)
def test_malformed_authorization_is_a_401_never_a_500(system: System, value: str) -> None:
    for i in range(len(system.apis())):
        answer = me(system, {"Authorization": value}, i)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "401"


def raw_status(port: int, authorization: bytes) -> tuple[int, bytes]:
    """Send bytes an HTTP client library would refuse to send; the status and body."""
    request = (
        b"GET /v0/me HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
        b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe\xfd", b"Basic \xc3\x28", b"Basic    ", b"\x00\x01", b"Bearer tok\ten"],
)
def test_raw_bytes_in_authorization_are_a_4xx_never_a_500(
    system: System, authorization: bytes
) -> None:
    for api in system.apis():
        status, body = raw_status(api.port, authorization)
        assert 400 <= status < 500, body


def test_failed_basic_logins_are_throttled_per_client_not_for_the_account_owner(
    system: System,
) -> None:
    """A10, for Basic password auth: one client guessing is held back (429 with Retry-After)
    after 3 failures, on every instance; the owner, from another address, still gets in."""
    email = system.new_account()
    attacker = a_client()
    apis = [a.url for a in system.apis()]

    def guess(n: int) -> httpx.Response:
        headers = {**basic(email, f"guess-{n}"), **JSON, **attacker}
        return httpx.get(f"{apis[n % len(apis)]}/v0/me", headers=headers, timeout=10)

    answers = [guess(n) for n in range(5)]
    owner = me(system, basic(email, PASSWORD))

    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    assert answers[4].status_code == 429 and int(answers[4].headers["retry-after"]) >= 1
    assert owner.status_code == 200
