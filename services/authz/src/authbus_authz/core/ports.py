"""What the authz core needs from the outside: the stores, and the records in them.

Small role protocols (accounts, tokens, API keys, crypto keys, login throttle); each core
component takes the ones it uses. Two implementations of all of them, one contract test
(tests/integration/test_store_contract.py): `stores.memory.MemoryStore` (unit tests) and
`stores.mongo.MongoStore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
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


class CredentialStore(
    AccountStore, TokenStore, ApiKeyStore, CryptoKeyStore, ThrottleStore, Protocol
):
    """Everything authz keeps (what the runner wires)."""
