"""authz's Kafka boundary: requests in, verdicts and command results out, events published.

Every request gets exactly one reply while its asker waits: a verdict, a command result, a
rejection, or `RequestFailed` when authz itself failed (store down: `unavailable`; a bug:
`internal`, logged with its traceback). Events (audit, changes) are published before the reply,
so an asker that sees "revoked" knows the broadcast is already on the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import structlog
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure

from authbus_authz.core.commands import Commands, Done
from authbus_authz.core.keys import KeyRing
from authbus_authz.core.verifier import Verifier, denied
from authbus_authz.metrics import AuthzMetrics
from authbus_shared.contracts.authz import (
    AccountCreated,
    CommandRejected,
    CreateAccount,
    CredentialVerified,
    IssueToken,
    Outcome,
    RequestFailed,
    RevokeToken,
    SealedCredential,
    TokenIssued,
    TokenRevoked,
    VerifyCredential,
)
from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    MessageDecodeError,
    payload_of,
    utcnow,
    wrap,
)
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder
from authbus_shared.sealing import SealError

log = structlog.get_logger(__name__)


@dataclass
class Topics:
    audit: str
    changes: str


@dataclass
class AuthzHandlers:
    verifier: Verifier
    commands: Commands
    ring: KeyRing
    responder: Responder
    publisher: Publisher
    topics: Topics
    metrics: AuthzMetrics
    instance_id: str

    async def handle(self, envelope: Envelope) -> None:
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
        except Exception:
            log.exception("request failed", type=envelope.type, id=envelope.id)
            reply = self._failed("internal")
        await self.responder.reply(envelope, reply)

    def _failed(self, reason: str) -> RequestFailed:
        self.metrics.failures.labels(reason=reason).inc()
        return RequestFailed(reason=reason)  # type: ignore[arg-type]

    async def _dispatch(self, request: Contract) -> Contract:
        match request:
            case VerifyCredential():
                return await self._verify(request)
            case CreateAccount():
                password = self._open(request.seal_kid, request.sealed_password)
                if password is None:
                    return await self._done("create_account", Done(_rejected("password")))
                done = await self.commands.create_account(request.email, password, request.locale)
                return await self._done("create_account", done)
            case IssueToken():
                expires = timedelta(seconds=request.expires_in_s) if request.expires_in_s else None
                done = await self.commands.issue_token(
                    request.email,
                    name=request.name,
                    scopes=request.scopes,
                    expires_in=expires,
                    reply_key=request.reply_key,
                )
                return await self._done("issue_token", done)
            case RevokeToken():
                return await self._done(
                    "revoke_token", await self.commands.revoke_token(request.token_id)
                )
            case _:
                raise MessageDecodeError(f"authz does not handle {request.TYPE}")

    async def _verify(self, request: VerifyCredential) -> CredentialVerified:
        started = time.perf_counter()
        credential = self._credential(request)
        kind = credential.kind.value if credential else "unreadable"
        verdict = await self.verifier.verify(credential) if credential else denied(Outcome.INVALID)
        self.metrics.verify_duration.labels(kind=kind).observe(time.perf_counter() - started)
        self.metrics.verdicts.labels(kind=kind, outcome=verdict.outcome.value).inc()
        return verdict

    def _credential(self, request: VerifyCredential) -> SealedCredential | None:
        opened = self._open(request.seal_kid, request.sealed)
        if opened is None:
            return None
        try:
            return SealedCredential.model_validate_json(opened)
        except ValidationError:
            return None

    def _open(self, kid: str, sealed: str) -> str | None:
        key = self.ring.sealing.get(kid)
        if key is None:
            log.warning("sealed to an unknown key", seal_kid=kid)
            return None
        try:
            return key.open(sealed).decode("utf-8")
        except (SealError, UnicodeDecodeError):
            return None

    async def _done(self, command: str, done: Done) -> Contract:
        for event in done.changes:
            await self._publish(self.topics.changes, event)
        for event in done.audit:
            await self._publish(self.topics.audit, event)
        result = done.reply.reason if isinstance(done.reply, CommandRejected) else "done"
        self.metrics.commands.labels(command=command, result=result).inc()
        return done.reply

    async def _publish(self, topic: str, event: Contract) -> None:
        envelope = wrap(event, producer=self.instance_id, now=utcnow())
        await self.publisher.publish(topic, envelope, key=account_of(event))


def account_of(event: Contract) -> str | None:
    """The partition key of an event: its account, so one account's events stay in order."""
    match event:
        case AccountCreated():
            return event.account.id
        case TokenIssued() | TokenRevoked():
            return event.account_id
    return None


def _rejected(detail: str) -> CommandRejected:
    return CommandRejected(reason="invalid_input", detail=detail)
