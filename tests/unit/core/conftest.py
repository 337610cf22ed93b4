"""Fixtures for the core unit tests: keys, a hand-moved clock, the in-memory store, and the
authz core wired on them as the runner wires it (but with cheap argon2 and work run inline)."""

from __future__ import annotations

import os

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.ports import StoredKey
from authbus_authz.core.throttle import Throttle
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore

from .support import AUDIENCE, ISSUER, T0, TOTP_ISSUER, FakeClock, run_now


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def signing_key(kek: bytes) -> StoredKey:
    return new_signing_key(kek, T0)


@pytest.fixture
def sealing_key(kek: bytes) -> StoredKey:
    return new_sealing_key(kek, T0)


@pytest.fixture
def ring(kek: bytes, signing_key: StoredKey, sealing_key: StoredKey) -> KeyRing:
    return KeyRing.load(kek, [signing_key, sealing_key])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(scope="session")
def passwords() -> Passwords:
    """argon2id with cheap parameters: same code path, milliseconds instead of ~40 ms."""
    return Passwords(time_cost=1, memory_kib=8192, parallelism=1)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def key_service(store: MemoryStore, kek: bytes, clock: FakeClock) -> KeyService:
    service = KeyService(store=store, kek=kek, clock=clock, sleep=clock.sleep)
    await service.start()
    return service


@pytest.fixture
def throttle(store: MemoryStore) -> Throttle:
    return Throttle(store)


@pytest.fixture
def verifier(
    store: MemoryStore,
    key_service: KeyService,
    passwords: Passwords,
    throttle: Throttle,
    clock: FakeClock,
) -> Verifier:
    return Verifier(
        store=store,
        keys=key_service,
        passwords=passwords,
        throttle=throttle,
        run_blocking=run_now,
        clock=clock,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


@pytest.fixture
def accounts(
    store: MemoryStore,
    verifier: Verifier,
    throttle: Throttle,
    passwords: Passwords,
    clock: FakeClock,
    kek: bytes,
) -> AccountCommands:
    return AccountCommands(
        store=store,
        verifier=verifier,
        throttle=throttle,
        passwords=passwords,
        run_blocking=run_now,
        clock=clock,
        kek=kek,
        default_locale="en",
        totp_issuer=TOTP_ISSUER,
    )


@pytest.fixture
def issuing(
    store: MemoryStore,
    key_service: KeyService,
    verifier: Verifier,
    accounts: AccountCommands,
    clock: FakeClock,
) -> CredentialCommands:
    return CredentialCommands(
        store=store,
        keys=key_service,
        verifier=verifier,
        accounts=accounts,
        clock=clock,
        issuer=ISSUER,
        audience=AUDIENCE,
        keys_creation_enabled=True,
    )
