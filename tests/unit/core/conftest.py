"""Fixtures for the core unit tests: a key ring, a hand-moved clock, the in-memory store."""

from __future__ import annotations

import os

import pytest

from authbus_authz.core.commands import Commands
from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.ports import StoredKey
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore

from .support import AUDIENCE, ISSUER, T0, FakeClock, run_now


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
def ring(kek: bytes, signing_key: StoredKey) -> KeyRing:
    return KeyRing.load(kek, [signing_key], active_signing=signing_key.kid)


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
def commands(store: MemoryStore, ring: KeyRing, passwords: Passwords, clock: FakeClock) -> Commands:
    return Commands(
        store=store,
        ring=ring,
        passwords=passwords,
        run_blocking=run_now,
        clock=clock,
        issuer=ISSUER,
        audience=AUDIENCE,
        default_locale="en",
    )


@pytest.fixture
def verifier(store: MemoryStore, ring: KeyRing, passwords: Passwords, clock: FakeClock) -> Verifier:
    return Verifier(
        store=store,
        ring=lambda: ring,
        passwords=passwords,
        run_blocking=run_now,
        clock=clock,
        issuer=ISSUER,
        audience=AUDIENCE,
    )
