"""What the authz core needs from the outside: the credential store, and the records in it.

Two implementations, one contract test (tests/integration/test_store_contract.py):
`authbus_authz.stores.memory.MemoryStore` (unit tests) and `...stores.mongo.MongoStore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

T = TypeVar("T")
Clock = Callable[[], datetime]


class RunBlocking(Protocol):
    """Runs CPU-bound work (argon2) off the event loop, with bounded concurrency."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


KeyUse = Literal["sig", "seal"]


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


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str  # the JWT's jti
    account_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key pair of authz; the private half encrypted with the key-encryption key."""

    kid: str
    use: KeyUse
    public_jwk: dict[str, str]
    private_sealed: bytes
    created_at: datetime


class EmailTaken(Exception):
    """An account with this email exists (a rejection the caller turns into a value)."""


class CredentialStore(Protocol):
    async def insert_account(self, account: Account) -> None:
        """Raises `EmailTaken` if `account.email_key` is in use."""

    async def account_by_email(self, email_key: str) -> Account | None: ...

    async def account_by_id(self, account_id: str) -> Account | None: ...

    async def insert_token(self, token: TokenRecord) -> None: ...

    async def token_by_id(self, token_id: str) -> TokenRecord | None: ...

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        """Mark revoked (keeping the first revocation time); None if unknown."""

    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        """The active key for `use`; stores `candidate` as it if there is none yet. Safe to
        race: every instance gets the same key back."""

    async def keys(self) -> list[StoredKey]: ...
