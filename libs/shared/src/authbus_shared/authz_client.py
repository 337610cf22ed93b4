"""How anything asks authz over Kafka: the api for verdicts, the admin CLI for commands.

`AuthzKeys` follows `authz.keys.v1` (public keys: the newest sealing key to seal credentials
to, the signing keys as a JWKS). `AuthzClient` turns calls into requests on the authz topics
and returns the typed reply, sealing every secret on the way out and opening the new token on
the way back. Nothing raw ever goes on the wire (SPEC A9).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog

from authbus_shared.contracts.authz import (
    CommandRejected,
    CreateAccount,
    CredentialVerified,
    IssueToken,
    KeyPublished,
    NewToken,
    RequestFailed,
    RevokeToken,
    SealedCredential,
    VerifyCredential,
)
from authbus_shared.contracts.envelope import Contract, Envelope, payload_of
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.sealing import SealingKey, b64url, public_from_jwk, seal_to

log = structlog.get_logger(__name__)


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
        elif self._seal is None or event.created_at >= self._seal[0]:
            self._seal = (event.created_at, event.kid, public_from_jwk(event.jwk))

    @property
    def has_sealing_key(self) -> bool:
        return self._seal is not None

    def seal(self, plaintext: bytes) -> tuple[str, str]:
        """(kid, sealed text) for the newest sealing key."""
        if self._seal is None:
            raise NoSealingKey("no authz sealing key seen on the keys topic")
        _, kid, public = self._seal
        return kid, seal_to(public, plaintext)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.signing.values())}


Verdict = CredentialVerified | RequestFailed


class AuthzClient:
    def __init__(
        self,
        rpc: RpcClient,
        keys: AuthzKeys,
        *,
        verify_topic: str,
        commands_topic: str,
        timeout: timedelta,
    ) -> None:
        self._rpc = rpc
        self._keys = keys
        self._verify = verify_topic
        self._commands = commands_topic
        self._timeout = timeout

    async def verify(
        self, credential: SealedCredential, *, partition_key: bytes, client: str | None = None
    ) -> Verdict:
        """The verdict, or RequestFailed. Raises RpcTimeout when authz does not answer."""
        kid, sealed = self._keys.seal(credential.model_dump_json().encode())
        request = VerifyCredential(seal_kid=kid, sealed=sealed, client=client)
        reply = await self._ask(self._verify, request, key=partition_key)
        if isinstance(reply, CredentialVerified | RequestFailed):
            return reply
        log.warning("unexpected reply to VerifyCredential", type=reply.TYPE)
        return RequestFailed(reason="internal")

    async def create_account(self, email: str, password: str, locale: str | None) -> Contract:
        kid, sealed = self._keys.seal(password.encode())
        request = CreateAccount(email=email, seal_kid=kid, sealed_password=sealed, locale=locale)
        return await self._ask(self._commands, request, key=email.strip().lower())

    async def issue_token(
        self, email: str, *, name: str, scopes: tuple[str, ...], expires_in_s: int | None
    ) -> tuple[NewToken, str] | CommandRejected | RequestFailed:
        """The reply and the token (opened with this call's one-time key), or why not."""
        one_time = SealingKey.generate()
        request = IssueToken(
            email=email,
            name=name,
            scopes=scopes,
            expires_in_s=expires_in_s,
            reply_key=b64url(one_time.public),
        )
        reply = await self._ask(self._commands, request, key=email.strip().lower())
        if isinstance(reply, NewToken):
            return reply, one_time.open(reply.sealed_token).decode()
        if isinstance(reply, CommandRejected | RequestFailed):
            return reply
        return RequestFailed(reason="internal")

    async def revoke_token(self, token_id: str) -> Contract:
        return await self._ask(self._commands, RevokeToken(token_id=token_id), key=token_id)

    async def _ask(self, topic: str, request: Contract, *, key: str | bytes) -> Contract:
        envelope = await self._rpc.request(topic, request, key=key, timeout=self._timeout)
        return payload_of(envelope)
