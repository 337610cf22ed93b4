"""The management API's twins for unit tests: authz's command side scripted (`CommandsTwin`),
the verdicts authz gives each test secret (`VERDICTS`), and the api app built on them
(`build`), shared by the management, settings page, docs and access tests."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.sessions import Sessions
from authbus_api.manage import Signup
from authbus_api.metrics import ApiMetrics
from authbus_shared import apikeys
from authbus_shared.authz_client import AuthzKeys, Refusal, Secret
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialVerified,
    Outcome,
    RequestFailed,
)
from authbus_shared.contracts.commands import (
    AccountRef,
    AccountScopes,
    CommandRejected,
    GrantScopes,
    KeyList,
    ListKeys,
    ListTokens,
    NewKey,
    NewToken,
    RevokeToken,
    SealedLogin,
    SealedPasswordChange,
    TokenInfo,
    TokenList,
    TotpEnrollment,
)
from authbus_shared.contracts.envelope import Contract, utcnow
from authbus_shared.contracts.events import (
    AccountChanged,
    AccountCreated,
    KeyIssued,
    TokenIssued,
    TokenRevoked,
)
from authbus_shared.ops import Probes, ops_app
from tests.api_twins import ANN, VALID, ScriptedAuthz, twin_gate

TOKEN = {"Authorization": "Bearer good", "Accept": "application/json"}
ADMIN = {"Authorization": "Bearer admin", "Accept": "application/json"}
PASSWORD = {"Authorization": "Basic YW5uQGV4YW1wbGUuY29tOnB3", "Accept": "application/json"}
LEGACY_KEY = apikeys.generate()
KEY = {
    "Authorization": "Basic "
    + base64.b64encode(f"ann@example.com/key:{LEGACY_KEY}".encode()).decode(),
    "Accept": "application/json",
}
VERDICTS = {  # what authz answers for each secret: its scopes are the effective ones (A8)
    "good": VALID,
    "admin": VALID.model_copy(update={"scopes": ("admin",), "credential_id": "t-admin"}),
    "pw": CredentialVerified(
        outcome=Outcome.VALID,
        account=ANN,
        scopes=("read", "write"),
        method=AuthMethod.PASSWORD,
        credential_id="password:acc-1",
    ),
    LEGACY_KEY: VALID.model_copy(
        update={"scopes": ("write",), "method": AuthMethod.KEY, "credential_id": "k1"}
    ),
}
JSON = {"Accept": "application/json"}
ENGLISH = {"Accept-Language": "en"}  # else the account's locale (fr) is spoken (E3)
URI = "otpauth://totp/authbus:ann%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=authbus"


@dataclass
class CommandsTwin:
    """authz's command side, scripted: records what it was asked, answers `next` or a default."""

    asked: list[object] = field(default_factory=list)
    next: Contract | Exception | None = None

    def _answer(self, default: Contract) -> Contract:
        answer, self.next = self.next, None
        if isinstance(answer, Exception):
            raise answer
        return answer or default

    async def ask(self, command: Contract, key: str) -> Contract:
        self.asked.append(command)
        if isinstance(command, ListTokens):
            return self._answer(TokenList(tokens=(TOKEN_INFO,)))
        if isinstance(command, ListKeys):
            return self._answer(KeyList(keys=()))
        if isinstance(command, RevokeToken):
            return self._answer(
                TokenRevoked(token_id=command.token_id, account_id="acc-1", revoked_at=utcnow())
            )
        if isinstance(command, GrantScopes):
            granted = tuple(sorted(command.exactly or ()))
            assert command.account.account_id is not None
            return self._answer(
                AccountScopes(account_id=command.account.account_id, scopes=granted)
            )
        return self._answer(RequestFailed(reason="internal"))

    async def create_account(self, email: str, password: str, locale: str | None) -> Contract:
        self.asked.append(("create_account", email, password, locale))
        return self._answer(
            AccountCreated(account=AccountView(id="acc-9", email=email, locale=locale))
        )

    async def create_token(
        self,
        login: SealedLogin,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        client: str | None = None,
    ) -> Secret | Refusal:
        self.asked.append(login)
        issued = TokenIssued(
            token_id="t9", account_id="acc-1", name=name, scopes=scopes, amr=("pwd", "otp", "mfa")
        )
        reply = self._answer(NewToken(token=issued, sealed_token="x"))
        if isinstance(reply, CommandRejected | RequestFailed):
            return reply
        assert isinstance(reply, NewToken)
        return Secret(reply, "the-token")

    async def create_key(
        self,
        account: AccountRef,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        within: tuple[str, ...] | None = None,
    ) -> Secret | Refusal:
        self.asked.append(("create_key", account, scopes, within))
        issued = KeyIssued(key_id="k9", account_id="acc-1", name=name, prefix="abk_12", scopes=())
        reply = self._answer(NewKey(key=issued, sealed_key="x"))
        if isinstance(reply, CommandRejected | RequestFailed):
            return reply
        assert isinstance(reply, NewKey)
        return Secret(reply, "abk_the-key")

    async def enroll_totp(self, account: AccountRef) -> Secret | Refusal:
        self.asked.append(account)
        return Secret(TotpEnrollment(account_id="acc-1", sealed_uri="x"), URI)

    async def confirm_totp(self, account: AccountRef, code: str) -> Contract:
        self.asked.append((account, code))
        return self._answer(AccountChanged(account_id="acc-1", change="totp_enabled", at=utcnow()))

    async def disable_totp(self, account: AccountRef, code: str) -> Contract:
        return await self.confirm_totp(account, code)

    async def change_password(
        self, change: SealedPasswordChange, client: str | None = None
    ) -> Contract:
        self.asked.append(change)
        return self._answer(
            AccountChanged(account_id="acc-1", change="password_changed", at=utcnow())
        )


TOKEN_INFO = TokenInfo(
    token_id="t1",
    name="ci",
    scopes=("read",),
    created_at=utcnow(),
    expires_at=None,
    last_used_at=None,
    revoked_at=None,
    amr=("pwd",),
    hint="…abcd",
)


def build(
    commands: CommandsTwin,
    signup: Signup = "open",
    *,
    sessions: Sessions | None = None,
    limited: bool = True,
    base_url: str = "http://api",
) -> httpx.AsyncClient:
    """The api app on the twins, as an httpx client. `limited`: the default rate policies
    (else none, for tests that send many requests)."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    authz = ScriptedAuthz(dict(VERDICTS))
    gate = twin_gate(
        metrics,
        authz=authz,
        deprecation={"Deprecation": "@1704067200"},
        policies=None if limited else (),
    )
    options = HttpOptions(commands=commands, signup=signup, sessions=sessions or Sessions())
    app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
