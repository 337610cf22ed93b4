"""What the authz core needs from the outside: the stores, and the records in them.

Small role protocols (accounts, tokens, API keys, crypto keys, login throttle, the outbox);
each core component takes the ones it uses. Two implementations of all of them, one contract
test (tests/integration/test_store_contract.py): `stores.memory.MemoryStore` (unit tests) and
`stores.mongo.MongoStore`.

Unit of work (`Transactional.atomically`, ADR 0015): the writes a piece of work makes through
the store land all together or not at all, outbox entries included, so a change and the events
that announce it cannot part. The core does not see it: the handler runs a command inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypedDict, TypeVar

T = TypeVar("T")
Clock = Callable[[], datetime]
KeyUse = Literal["sig", "seal"]


class RunBlocking(Protocol):
    """Runs CPU-bound work (argon2) off the event loop, with bounded concurrency."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    email: str  # as given at sign-up
    email_key: str  # normalized (case-folded): what uniqueness and lookups use
    password_hash: str
    locale: str | None
    created_at: datetime
    credentials_changed_at: datetime  # tokens issued before this no longer count
    disabled: bool = False
    totp_enabled: bool = False
    totp_secret: bytes | None = None  # encrypted (AES-GCM under the key-encryption key)
    totp_pending: bytes | None = None  # enrolled, not confirmed yet (encrypted)
    totp_last_step: int = 0  # the last TOTP time step accepted: a code is good once
    scopes: tuple[str, ...] = ()  # granted by operators (A8): what its credentials may carry


class AccountUpdate(TypedDict, total=False):
    password_hash: str
    credentials_changed_at: datetime
    disabled: bool
    totp_enabled: bool
    totp_secret: bytes | None
    totp_pending: bytes | None
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str  # the JWT's jti
    account_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None
    amr: tuple[str, ...] = ()
    hint: str = ""  # the token's last 6 characters
    last_used_at: datetime | None = None
    # Hex SHA-256 of the token as issued: only that exact text verifies (no other encoding of
    # the same signature). "" for tokens issued before it was recorded: `hint` is compared.
    token_sha256: str = ""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    account_id: str
    name: str
    prefix: str
    digest: str  # hex SHA-256 of the key: the only form a key is stored in
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key pair of authz; the private half encrypted with the key-encryption key."""

    kid: str
    use: KeyUse
    public_jwk: dict[str, str]
    private_sealed: bytes
    created_at: datetime
    active: bool = True


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed logins counted under one throttle key."""

    count: int
    first_at: datetime
    blocked_until: datetime | None = None


class EmailTaken(Exception):
    """An account with this email exists (a rejection the caller turns into a value)."""


class AccountStore(Protocol):
    async def insert_account(self, account: Account) -> None:
        """Raises `EmailTaken` if `account.email_key` is in use."""

    async def account_by_email(self, email_key: str) -> Account | None: ...

    async def account_by_id(self, account_id: str) -> Account | None: ...

    async def update_account(self, account_id: str, changes: AccountUpdate) -> Account | None:
        """Set these fields; returns the account after, or None if unknown."""

    async def claim_totp_step(self, account_id: str, step: int) -> bool:
        """Record `step` as used if it is later than the last one used (atomic): a code is
        accepted once."""

    async def change_scopes(
        self, account_id: str, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> Account | None:
        """Take `remove` out of the account's grant, then put `add` in, each step atomic (a
        concurrent change is never lost); the account after, or None if unknown. The grant
        keeps its order, new scopes at the end, each once."""


class TokenStore(Protocol):
    async def insert_token(self, token: TokenRecord) -> None: ...

    async def token_by_id(self, token_id: str) -> TokenRecord | None: ...

    async def tokens_of(self, account_id: str) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        """Mark revoked (keeping the first revocation time); None if unknown."""

    async def touch_tokens(self, last_used: Mapping[str, datetime]) -> None:
        """Raise each token's last-used time to the given one (never lowers it)."""


class ApiKeyStore(Protocol):
    async def insert_api_key(self, key: ApiKeyRecord) -> None: ...

    async def api_key_by_digest(self, digest: str) -> ApiKeyRecord | None: ...

    async def api_key_by_id(self, key_id: str) -> ApiKeyRecord | None: ...

    async def api_keys_of(self, account_id: str) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None: ...

    async def touch_api_keys(self, last_used: Mapping[str, datetime]) -> None: ...


class CryptoKeyStore(Protocol):
    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        """The active key for `use`; stores `candidate` as it if there is none yet. Safe to
        race: every instance gets the same key back."""

    async def rotate_key(self, use: KeyUse, new: StoredKey, previous_kid: str) -> bool:
        """Make `new` the active key if `previous_kid` still is (compare and set); the previous
        key stays, retired, for the overlap. False if another rotation won."""

    async def crypto_keys(self) -> list[StoredKey]:
        """Every key, active and retired."""


class ThrottleStore(Protocol):
    async def failures(self, keys: list[str], now: datetime) -> dict[str, Failures]:
        """The live failure counts of these keys (absent: none)."""

    async def add_failure(self, key: str, now: datetime, window_s: float) -> Failures:
        """Count one failure (a count older than the window starts again), atomically."""

    async def block(self, key: str, until: datetime) -> None:
        """Blocked until `until` (never shortens a block)."""

    async def clear(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event waiting to be published: staged with the change it announces (ADR 0015)."""

    id: str  # the envelope's id: a consumer that sees it twice knows it is a duplicate
    topic: str
    key: str | None  # the partition key
    envelope: bytes  # the encoded envelope, published as is (a republish is the same message)
    created_at: datetime
    due_at: datetime  # the relay may take it from then on; a claim moves it later
    position: int = 0  # its place among the entries staged with it: relayed in that order


class OutboxStore(Protocol):
    async def add_to_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        """Stage events (inside the caller's unit of work, if any)."""

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutboxEntry]:
        """Up to `limit` entries due at `now`, oldest first (by `created_at`, then `position`),
        each claimed (its `due_at` set to
        `until`) atomically: concurrent claimers never get the same entry before `until`."""

    async def remove_from_outbox(self, ids: Sequence[str]) -> None:
        """Forget published entries (unknown ids are ignored)."""


class Transactional(Protocol):
    async def atomically(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` as one unit: every store write it makes lands, or none does (an
        exception out of `work` undoes them; its reads see its own writes). `work` may be run
        again after a transient conflict with a concurrent unit, so it must do nothing
        outside the store that cannot be repeated, and make no concurrent store calls (one
        session, one task). Login-throttle writes stay outside: a failure counts even when
        the command that saw it is undone. Nested calls join the outer unit."""


class CredentialStore(
    AccountStore,
    TokenStore,
    ApiKeyStore,
    CryptoKeyStore,
    ThrottleStore,
    OutboxStore,
    Transactional,
    Protocol,
):
    """Everything authz keeps (what the runner wires)."""
