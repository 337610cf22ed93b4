"""How anything asks authz over Kafka: the api for verdicts and users' commands, the admin CLI
for operators' commands.

`AuthzKeys` follows `authz.keys.v1` (public keys: the active sealing key to seal to, the
signing keys as a JWKS). `AuthzClient` turns calls into requests on the authz topics and
returns the typed reply. It seals every secret on the way out (passwords, codes, credentials)
and, for commands that create one (a token, a key, a TOTP secret), sends a one-time public key
and opens what comes back. Nothing raw ever goes on the wire (SPEC A9).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from authbus_shared.contracts.authz import (
    CredentialKind,
    CredentialVerified,
    RequestFailed,
    SealedCredential,
    VerifyCredential,
)
from authbus_shared.contracts.commands import (
    AccountRef,
    ChangePassword,
    CommandRejected,
    ConfirmTotp,
    CreateAccount,
    CreateKey,
    CreateToken,
    DisableTotp,
    EnrollTotp,
    IssueToken,
    NewKey,
    NewToken,
    SealedLogin,
    SealedPasswordChange,
    TotpEnrollment,
)
from authbus_shared.contracts.envelope import Contract, Envelope, payload_of
from authbus_shared.contracts.events import KeyPublished
from authbus_shared.hedging import PartitionHealth
from authbus_shared.kafka.rpc import RpcClient, RpcTimeout
from authbus_shared.sealing import SealingKey, b64url, public_from_jwk, seal_to


class NoSealingKey(RuntimeError):
    """authz has not published a sealing key yet (authz never started on this cluster)."""


class AuthzKeys:
    """The public keys authz published. Handler for a BroadcastReader on `authz.keys.v1`."""

    def __init__(self) -> None:
        self._seal: tuple[datetime, str, bytes] | None = None
        self.signing: dict[str, dict[str, str]] = {}

    async def handle(self, envelope: Envelope) -> None:
        event = payload_of(envelope)
        if not isinstance(event, KeyPublished):
            return
        if event.use == "sig":
            self.signing[event.kid] = dict(event.jwk)
        elif event.active and (self._seal is None or event.created_at >= self._seal[0]):
            self._seal = (event.created_at, event.kid, public_from_jwk(event.jwk))

    @property
    def has_sealing_key(self) -> bool:
        return self._seal is not None

    def seal(self, plaintext: bytes) -> tuple[str, str]:
        """(kid, sealed text) for the newest active sealing key."""
        if self._seal is None:
            raise NoSealingKey("no authz sealing key seen on the keys topic")
        _, kid, public = self._seal
        return kid, seal_to(public, plaintext)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.signing.values())}


Verdict = CredentialVerified | RequestFailed
Refusal = CommandRejected | RequestFailed


@dataclass(frozen=True)
class Secret:
    """A reply whose secret (token, key, otpauth URI) was opened with this call's one-time key."""

    reply: NewToken | NewKey | TotpEnrollment
    value: str


@dataclass(frozen=True)
class Hedge:
    """Verification hedging: after `after` without an answer, another copy goes to another
    partition of the verify topic (`partitions` of them), up to `copies` in all."""

    partitions: int
    after: timedelta = timedelta(milliseconds=250)
    copies: int = 3


FIRST = asyncio.FIRST_COMPLETED


class AuthzClient:
    def __init__(
        self,
        rpc: RpcClient,
        keys: AuthzKeys,
        *,
        verify_topic: str,
        commands_topic: str,
        timeout: timedelta,
        hedge: Hedge | None = None,
    ) -> None:
        self._rpc = rpc
        self._keys = keys
        self._verify = verify_topic
        self._commands = commands_topic
        self._timeout = timeout
        self._hedge = hedge
        self._health = PartitionHealth(hedge.partitions) if hedge else None

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict:
        """The verdict, or RequestFailed. Raises RpcTimeout when authz does not answer within
        `within` (default: the client's verify budget).

        Tokens and keys are hedged (`Hedge`): checking one is cheap and has no effect, so a
        copy goes to another partition when the first is slow to answer (its authz died and
        the group has not noticed yet). A password is never hedged: each check costs argon2
        and counts towards the failed-login throttle."""
        kid, sealed = self._seal(credential)
        request = VerifyCredential(seal_kid=kid, sealed=sealed, client=client)
        budget = within or self._timeout
        if self._hedge is None or credential.kind is CredentialKind.PASSWORD:
            reply = await self._rpc.request(
                self._verify, request, key=partition_key, timeout=budget
            )
        else:
            reply = await self._hedged(request, partition_key, self._hedge, budget)
        answer = payload_of(reply)
        return (
            answer
            if isinstance(answer, CredentialVerified | RequestFailed)
            else RequestFailed(reason="internal")
        )

    async def _hedged(
        self, request: Contract, key: bytes, hedge: Hedge, budget: timedelta
    ) -> Envelope:
        """The first reply among up to `hedge.copies` copies, each sent `hedge.after` after
        the previous one went unanswered, to the partition `PartitionHealth` picks; all
        within the one verify budget."""
        health = self._health
        assert health is not None  # noqa: S101 - set with the hedge
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget.total_seconds()
        attempts: dict[asyncio.Task[Envelope], int] = {}
        tried: set[int] = set()
        partition, error = health.home(key), None
        try:
            while True:
                left = deadline - loop.time()
                if len(tried) < hedge.copies and left > 0:
                    tried.add(partition)
                    sent = self._rpc.request(
                        self._verify,
                        request,
                        key=key,
                        partition=partition,
                        timeout=timedelta(seconds=left),
                    )
                    attempts[asyncio.ensure_future(sent)] = partition
                if not attempts:
                    raise error or RpcTimeout(f"no reply from {self._verify}")
                wait = hedge.after.total_seconds() if len(tried) < hedge.copies else left
                done, _ = await asyncio.wait(attempts, timeout=max(0.0, wait), return_when=FIRST)
                for task in done:
                    p = attempts.pop(task)
                    if task.exception() is None:
                        reply = task.result()
                        health.answered(p, loop.time(), by=reply.producer)
                        return reply
                    health.failed(p, loop.time())
                    error = task.exception()
                if not done:  # slow: prefer another partition for the next copy
                    health.failed(partition, loop.time())
                partition = health.pick(tried, loop.time())
        finally:
            for task in attempts:
                task.cancel()

    async def ask(self, command: Contract, key: str) -> Contract:
        """Send a command; the reply (a result, CommandRejected or RequestFailed)."""
        reply = await self._rpc.request(self._commands, command, key=key, timeout=self._timeout)
        return payload_of(reply)

    async def create_account(self, email: str, password: str, locale: str | None) -> Contract:
        kid, sealed = self._seal(password)
        request = CreateAccount(email=email, seal_kid=kid, sealed_password=sealed, locale=locale)
        return await self.ask(request, email.strip().lower())

    async def issue_token(
        self,
        email: str,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
    ) -> Secret | Refusal:
        """An operator's token for an account (no password)."""
        return await self._secret(
            lambda reply_key: IssueToken(
                email=email,
                name=name,
                scopes=scopes,
                expires_in_s=expires_in_s,
                reply_key=reply_key,
            ),
            email,
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
        """A user's token, with their password (and TOTP code when 2FA is on)."""
        kid, sealed = self._seal(login)
        return await self._secret(
            lambda reply_key: CreateToken(
                seal_kid=kid,
                sealed=sealed,
                client=client,
                name=name,
                scopes=scopes,
                expires_in_s=expires_in_s,
                reply_key=reply_key,
            ),
            login.email.strip().lower(),
        )

    async def create_key(
        self,
        account: AccountRef,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        within: tuple[str, ...] | None = None,
    ) -> Secret | Refusal:
        """A legacy key; `within`: the scopes of the token or key asking for it (SPEC A8)."""
        return await self._secret(
            lambda reply_key: CreateKey(
                account=account,
                name=name,
                scopes=scopes,
                expires_in_s=expires_in_s,
                reply_key=reply_key,
                within=within,
            ),
            _key_of(account),
        )

    async def enroll_totp(self, account: AccountRef) -> Secret | Refusal:
        """A pending TOTP secret; `value` is its otpauth:// URI."""
        return await self._secret(
            lambda reply_key: EnrollTotp(account=account, reply_key=reply_key), _key_of(account)
        )

    async def confirm_totp(self, account: AccountRef, code: str) -> Contract:
        kid, sealed = self._seal(code)
        return await self.ask(
            ConfirmTotp(account=account, seal_kid=kid, sealed_code=sealed), _key_of(account)
        )

    async def disable_totp(self, account: AccountRef, code: str) -> Contract:
        kid, sealed = self._seal(code)
        return await self.ask(
            DisableTotp(account=account, seal_kid=kid, sealed_code=sealed), _key_of(account)
        )

    async def change_password(
        self, change: SealedPasswordChange, client: str | None = None
    ) -> Contract:
        kid, sealed = self._seal(change)
        return await self.ask(
            ChangePassword(seal_kid=kid, sealed=sealed, client=client), change.email.strip().lower()
        )

    def _seal(self, value: BaseModel | str) -> tuple[str, str]:
        plaintext = value if isinstance(value, str) else value.model_dump_json()
        return self._keys.seal(plaintext.encode())

    async def _secret(self, make: Callable[[str], Contract], key: str) -> Secret | Refusal:
        one_time = SealingKey.generate()
        reply = await self.ask(make(b64url(one_time.public)), key)
        match reply:
            case (
                NewToken(sealed_token=sealed)
                | NewKey(sealed_key=sealed)
                | TotpEnrollment(sealed_uri=sealed)
            ):
                return Secret(reply, one_time.open(sealed).decode())
            case CommandRejected() | RequestFailed():
                return reply
        return RequestFailed(reason="internal")


def _key_of(account: AccountRef) -> str:
    return account.account_id or (account.email or "").strip().lower()
