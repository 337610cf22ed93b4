"""authz's Kafka boundary: requests in, verdicts and command results out, events published.

Every request gets exactly one reply while its asker waits: a verdict, a command result, a
rejection, or `RequestFailed` when authz itself failed (store down, or its events committed
but not published: `unavailable`; a bug: `internal`, logged with its traceback).

Events go through the outbox (`outbox.py`, ADR 0015). A command that may write runs in one
unit of work with its events staged, commits, then publishes them; read-only commands run
outside. A verification's audit events (failed logins, lockouts) are staged after the
throttle's counts (which never join a unit), then published. Either way the events are
published before the reply, so an asker that sees "revoked" knows the broadcast is already on
the log. Usage reports (`auth.usage.v1`) are not requests: they are recorded (`last_used.py`:
kept in memory while the store is unreachable), their audit events published, no reply.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar, cast

import structlog
from pydantic import BaseModel, ValidationError
from pymongo.errors import ConnectionFailure

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands, Request
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.ports import OutboxEntry, StoredKey, Transactional
from authbus_authz.core.results import Done, rejected
from authbus_authz.core.verifier import Checked, Verifier
from authbus_authz.last_used import LastUsed
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.outbox import Outbox, Unsent, account_of
from authbus_shared.contracts.authz import (
    CredentialVerified,
    Outcome,
    RequestFailed,
    SealedCredential,
    VerifyCredential,
)
from authbus_shared.contracts.commands import (
    ChangePassword,
    CommandRejected,
    ConfirmTotp,
    CreateAccount,
    CreateKey,
    CreateToken,
    DisableTotp,
    EnrollTotp,
    GetAccount,
    GrantScopes,
    IssueToken,
    ListKeys,
    ListTokens,
    NewCredentialRequest,
    RevokeKey,
    RevokeToken,
    RotateKey,
    SealedLogin,
    SealedPasswordChange,
    SetAccountDisabled,
)
from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    MessageDecodeError,
    payload_of,
    utcnow,
    wrap,
)
from authbus_shared.contracts.events import CredentialsUsed, KeyPublished, KeyRotated
from authbus_shared.kafka.rpc import Responder
from authbus_shared.sealing import SealError

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound=Contract)
Route = Callable[[Contract], Awaitable[Done]]
READ_ONLY = frozenset({"get_account", "list_tokens", "list_keys"})  # no unit of work, no events


def _no_fault(command: str) -> None:
    """The default `after_commit` hook: nothing (`faults.py` has the one tests use)."""


@dataclass
class AuthzHandlers:
    verifier: Verifier
    accounts: AccountCommands
    credentials: CredentialCommands
    last_used: LastUsed
    keys: KeyService
    responder: Responder
    store: Transactional
    outbox: Outbox
    metrics: AuthzMetrics
    instance_id: str
    after_commit: Callable[[str], None] = _no_fault

    async def handle(self, envelope: Envelope) -> None:
        if envelope.type == CredentialsUsed.TYPE:
            await self._usage(envelope)
            return
        if not self.responder.wanted(envelope, utcnow()):
            reason = "deadline" if envelope.reply_to else "no_reply_to"
            self.metrics.skipped.labels(reason=reason).inc()
            return
        try:
            request = payload_of(envelope)
        except MessageDecodeError:
            await self.responder.reply(envelope, CommandRejected(reason="invalid_input"))
            raise
        try:
            reply = await self._dispatch(request)
        except ConnectionFailure as exc:
            log.warning("store unavailable", type=envelope.type, error=repr(exc))
            reply = self._failed("unavailable")
        except Unsent as exc:  # committed and staged: the relay publishes them
            log.warning("events not published", type=envelope.type, error=repr(exc.__cause__))
            reply = self._failed("unavailable")
        except Exception:
            log.exception("request failed", type=envelope.type, id=envelope.id)
            reply = self._failed("internal")
        await self.responder.reply(envelope, reply)

    def _failed(self, reason: str) -> RequestFailed:
        self.metrics.failures.labels(reason=reason).inc()
        return RequestFailed(reason=reason)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        # contract type -> (command name for metrics, the method that does it)
        self._routes: dict[type[Contract], tuple[str, Route]] = dict(
            [
                route(CreateAccount, "create_account", self._create_account),
                route(ChangePassword, "change_password", self._change_password),
                route(SetAccountDisabled, "set_account_disabled", self._set_disabled),
                route(GrantScopes, "grant_scopes", self.accounts.grant_scopes),
                route(GetAccount, "get_account", self._get_account),
                route(IssueToken, "issue_token", self._issue_token),
                route(CreateToken, "create_token", self._create_token),
                route(ListTokens, "list_tokens", self._list_tokens),
                route(RevokeToken, "revoke_token", self._revoke_token),
                route(CreateKey, "create_key", self._create_key),
                route(ListKeys, "list_keys", self._list_keys),
                route(RevokeKey, "revoke_key", self._revoke_key),
                route(EnrollTotp, "enroll_totp", self._enroll_totp),
                route(ConfirmTotp, "confirm_totp", self._confirm_totp),
                route(DisableTotp, "disable_totp", self._disable_totp),
                route(RotateKey, "rotate_key", self._rotate),
            ]
        )

    async def _dispatch(self, request: Contract) -> Contract:
        if isinstance(request, VerifyCredential):
            return await self._verify(request)
        entry = self._routes.get(type(request))
        if entry is None:
            raise MessageDecodeError(f"authz does not handle {request.TYPE}")
        command, do = entry
        if command in READ_ONLY:
            return self._count(command, await do(request))
        done, staged = await self.store.atomically(lambda: self._staged(do, request))
        self.after_commit(command)
        if command == "rotate_key":  # the ring follows the store once the swap is committed
            await self.keys.reload()
        await self.outbox.send(staged)
        return self._count(command, done)

    async def _staged(self, do: Route, request: Contract) -> tuple[Done, list[OutboxEntry]]:
        """The unit of work of a command: the core's writes and its events, staged."""
        done = await do(request)
        staged = self.outbox.entries(done)
        await self.outbox.stage(staged)
        return done, staged

    # one method per command: open what is sealed, call the core --------------------------
    async def _create_account(self, r: CreateAccount) -> Done:
        password = await self._open(r.seal_kid, r.sealed_password)
        if password is None:
            return rejected("invalid_input", "sealed_password")
        return await self.accounts.create_account(r.email, password, r.locale)

    async def _change_password(self, r: ChangePassword) -> Done:
        change = await self._open_model(r.seal_kid, r.sealed, SealedPasswordChange)
        if change is None:
            return rejected("invalid_input", "sealed")
        return await self.accounts.change_password(change, r.client)

    async def _set_disabled(self, r: SetAccountDisabled) -> Done:
        return await self.accounts.set_disabled(r.account, r.disabled)

    async def _get_account(self, r: GetAccount) -> Done:
        return await self.accounts.describe(r.account)

    async def _issue_token(self, r: IssueToken) -> Done:
        return await self.credentials.issue_token(r.email, _request(r))

    async def _create_token(self, r: CreateToken) -> Done:
        login = await self._open_model(r.seal_kid, r.sealed, SealedLogin)
        if login is None:
            return rejected("invalid_input", "sealed")
        return await self.credentials.create_token(login, _request(r), r.client)

    async def _list_tokens(self, r: ListTokens) -> Done:
        return await self.credentials.list_tokens(r.account)

    async def _revoke_token(self, r: RevokeToken) -> Done:
        return await self.credentials.revoke_token(r.token_id, r.account_id)

    async def _create_key(self, r: CreateKey) -> Done:
        return await self.credentials.create_key(r.account, _request(r, within=r.within))

    async def _list_keys(self, r: ListKeys) -> Done:
        return await self.credentials.list_keys(r.account)

    async def _revoke_key(self, r: RevokeKey) -> Done:
        return await self.credentials.revoke_key(r.key_id, r.account_id)

    async def _enroll_totp(self, r: EnrollTotp) -> Done:
        return await self.accounts.enroll_totp(r.account, r.reply_key)

    async def _confirm_totp(self, r: ConfirmTotp) -> Done:
        code = await self._open(r.seal_kid, r.sealed_code)
        if code is None:
            return rejected("invalid_input", "sealed_code")
        return await self.accounts.confirm_totp(r.account, code)

    async def _disable_totp(self, r: DisableTotp) -> Done:
        code = await self._open(r.seal_kid, r.sealed_code)
        if code is None:
            return rejected("invalid_input", "sealed_code")
        return await self.accounts.disable_totp(r.account, code)

    async def _verify(self, request: VerifyCredential) -> CredentialVerified:
        started = time.perf_counter()
        credential = await self._open_model(request.seal_kid, request.sealed, SealedCredential)
        kind = credential.kind.value if credential else "unreadable"
        if credential is None:
            checked = Checked(CredentialVerified(outcome=Outcome.INVALID, checked_at=utcnow()))
        else:
            checked = await self.verifier.verify(credential, request.client)
        if checked.audit:
            staged = self.outbox.audit(checked.audit)
            await self.outbox.stage(staged)
            await self.outbox.send(staged)
        self.metrics.verify_duration.labels(kind=kind).observe(time.perf_counter() - started)
        self.metrics.verdicts.labels(kind=kind, outcome=checked.verdict.outcome.value).inc()
        return checked.verdict

    async def _rotate(self, request: RotateKey) -> Done:
        rotated = await self.keys.swap(request.use)  # the ring is reloaded after the commit
        if rotated is None:
            return rejected("invalid_input", "a concurrent rotation won; try again")
        event = KeyRotated(
            use=request.use, kid=rotated.new.kid, previous_kid=rotated.previous.kid, at=utcnow()
        )
        return Done(
            event,
            audit=(event,),
            published=tuple(published(k) for k in (rotated.previous, rotated.new)),
        )

    async def _usage(self, envelope: Envelope) -> None:
        report = payload_of(envelope)
        if not isinstance(report, CredentialsUsed):
            raise MessageDecodeError(f"not a usage report: {envelope.type}")
        for event in await self.last_used.record(report):
            await self._publish(self.outbox.topics.audit, event)

    async def _open(self, kid: str, sealed: str) -> str | None:
        """The plaintext of a payload sealed to our key `kid` (None if it does not open)."""
        key = self.keys.ring.sealing.get(kid) if await self.keys.knows(kid) else None
        if key is None:
            log.warning("sealed to an unknown key", seal_kid=kid)
            return None
        try:
            return key.open(sealed).decode("utf-8")
        except (SealError, UnicodeDecodeError):
            return None

    async def _open_model(self, kid: str, sealed: str, model: type[M]) -> M | None:
        opened = await self._open(kid, sealed)
        if opened is None:
            return None
        try:
            return model.model_validate_json(opened)
        except ValidationError:
            return None

    def _count(self, command: str, done: Done) -> Contract:
        result = done.reply.reason if isinstance(done.reply, CommandRejected) else "done"
        self.metrics.commands.labels(command=command, result=result).inc()
        return done.reply

    async def _publish(self, topic: str, event: Contract) -> None:
        """Straight to Kafka, not through the outbox: for usage audit events, whose report
        is handled again if authz dies before this (its offset is not committed yet)."""
        envelope = wrap(event, producer=self.instance_id, now=utcnow())
        await self.outbox.publisher.publish(topic, envelope, key=account_of(event))


def route(
    contract: type[C], command: str, do: Callable[[C], Awaitable[Done]]
) -> tuple[type[Contract], tuple[str, Route]]:
    """A route table entry. `_dispatch` looks routes up by the request's exact type, so the
    request handed to `do` is a `contract`."""

    async def call(request: Contract) -> Done:
        return await do(cast(C, request))

    return contract, (command, call)


def _request(request: NewCredentialRequest, within: tuple[str, ...] | None = None) -> Request:
    expires = timedelta(seconds=request.expires_in_s) if request.expires_in_s else None
    return Request(
        name=request.name,
        scopes=request.scopes,
        expires_in=expires,
        reply_key=request.reply_key,
        within=within,
    )


def published(key: StoredKey) -> KeyPublished:
    return KeyPublished(
        kid=key.kid, use=key.use, jwk=key.public_jwk, created_at=key.created_at, active=key.active
    )
