"""The key ring's life (SPEC A1, A9): first keys, reloads, rotation with an overlap, several
authz instances on one store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from authbus_authz.core.keyring import KeyService
from authbus_authz.core.ports import KeyUse, StoredKey
from authbus_authz.core.tokens import Claims, check_signature, sign
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.sealing import public_from_jwk, seal_to

from .support import AUDIENCE, ISSUER, T0, FakeClock

DAY = timedelta(days=1)
USES: tuple[KeyUse, ...] = ("sig", "seal")


def service(store: MemoryStore, kek: bytes, clock: FakeClock) -> KeyService:
    return KeyService(store=store, kek=kek, clock=clock)


def token_signed_by(keys: KeyService) -> str:
    return sign(
        keys.ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="tok-1",
        account_id="acct-1",
        scopes=(),
        issued_at=T0,
        expires_at=None,
        amr=("admin",),
    )


def active_kids(store: MemoryStore) -> dict[KeyUse, str]:
    return dict(store.active)


# --- start ------------------------------------------------------------------------------------


async def test_first_start_creates_one_signing_and_one_sealing_key(
    store: MemoryStore, key_service: KeyService
) -> None:
    uses = sorted(k.use for k in store.crypto.values())

    assert uses == ["seal", "sig"]
    assert all(k.active for k in store.crypto.values())
    assert key_service.ring.signing_kid == store.active["sig"]
    assert key_service.ring.sealing_kid == store.active["seal"]


async def test_a_second_instance_starting_on_the_same_store_reuses_the_keys(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    other = service(store, kek, clock)

    await other.start()

    assert len(store.crypto) == 2
    assert other.ring.signing_kid == key_service.ring.signing_kid
    assert other.ring.sealing_kid == key_service.ring.sealing_kid
    claims = check_signature(
        token_signed_by(key_service), other.ring, issuer=ISSUER, audience=AUDIENCE, now=T0
    )
    assert isinstance(claims, Claims)


# --- rotation -------------------------------------------------------------------------------


@pytest.mark.parametrize("use", ["sig", "seal"])
async def test_rotation_makes_a_new_active_key_and_keeps_the_previous_one_retired(
    store: MemoryStore, clock: FakeClock, key_service: KeyService, use: KeyUse
) -> None:
    previous = key_service.ring.active(use)
    clock.advance(DAY)

    rotated = await key_service.rotate(use)

    assert rotated is not None
    assert rotated.previous.kid == previous.kid
    assert rotated.previous.active is False
    assert (rotated.new.use, rotated.new.active, rotated.new.created_at) == (use, True, T0 + DAY)
    assert rotated.new.kid != previous.kid
    assert key_service.ring.active(use) == rotated.new
    assert store.active[use] == rotated.new.kid
    assert len(store.crypto) == 3


async def test_a_swap_rotates_in_the_store_only_and_says_what_a_rotation_would(
    store: MemoryStore, clock: FakeClock, key_service: KeyService
) -> None:
    """For a unit of work (ADR 0015): the ring follows only once the unit has committed."""
    previous = key_service.ring.active("sig")
    clock.advance(DAY)

    swapped = await key_service.swap("sig")

    assert swapped is not None
    assert store.active["sig"] == swapped.new.kid != previous.kid
    assert key_service.ring.active("sig") == previous  # not reloaded yet
    await key_service.reload()
    assert key_service.ring.active("sig") == swapped.new
    assert [k for k in key_service.ring.published if k.kid == previous.kid] == [swapped.previous]


async def test_a_stale_swap_changes_nothing(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    other = service(store, kek, clock)
    await other.start()
    assert await other.rotate("sig") is not None

    assert await key_service.swap("sig") is None  # its ring names a key no longer active
    assert len(store.crypto) == 3


async def test_tokens_signed_before_a_rotation_still_verify_after_it(
    key_service: KeyService,
) -> None:
    old = token_signed_by(key_service)

    rotated = await key_service.rotate("sig")

    assert rotated is not None
    new = token_signed_by(key_service)
    for token in (old, new):
        claims = check_signature(token, key_service.ring, issuer=ISSUER, audience=AUDIENCE, now=T0)
        assert isinstance(claims, Claims)
    assert key_service.ring.signing_kid == rotated.new.kid != rotated.previous.kid


async def test_a_payload_sealed_to_the_old_sealing_key_still_opens_after_rotation(
    key_service: KeyService,
) -> None:
    old = key_service.ring.active("seal")
    sealed = seal_to(public_from_jwk(old.public_jwk), b"in flight during the rotation")

    await key_service.rotate("seal")

    assert key_service.ring.sealing_kid != old.kid
    assert key_service.ring.sealing[old.kid].open(sealed) == b"in flight during the rotation"


async def test_concurrent_rotations_from_two_instances_make_exactly_one_new_key_per_use(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    """Compare-and-set on the previous kid: the stale instance loses, makes no key, and ends
    up with the winner's ring."""
    stale = service(store, kek, clock)
    await stale.start()

    for use in USES:
        won = await key_service.rotate(use)
        lost = await stale.rotate(use)

        assert won is not None
        assert lost is None
        assert stale.ring.active(use) == won.new
    assert len(store.crypto) == 4
    assert sum(k.active for k in store.crypto.values()) == 2
    assert stale.ring.published == key_service.ring.published


# --- reloads --------------------------------------------------------------------------------


async def test_an_unknown_kid_rotated_in_elsewhere_is_learnt_by_a_reload(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    elsewhere = service(store, kek, clock)
    await elsewhere.start()
    clock.advance(key_service.min_reload_interval)
    rotated = await elsewhere.rotate("sig")
    assert rotated is not None

    assert await key_service.knows(rotated.new.kid)
    assert key_service.ring.signing_kid == rotated.new.kid


async def test_unknown_kids_reload_at_most_once_per_interval(
    store: MemoryStore,
    kek: bytes,
    clock: FakeClock,
    key_service: KeyService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood of tokens with made-up kids costs one store read per interval, not one each:
    an asker arriving sooner waits out the rest of the interval before the next read."""
    clock.advance(key_service.min_reload_interval)
    reads = 0
    read_keys = store.crypto_keys

    async def counted_read() -> list[StoredKey]:
        nonlocal reads
        reads += 1
        return await read_keys()

    monkeypatch.setattr(store, "crypto_keys", counted_read)
    started = clock.now

    known = [await key_service.knows(f"made-up-{i}") for i in range(5)]

    assert known == [False] * 5
    assert reads == 5
    assert clock.now - started >= 4 * key_service.min_reload_interval
    assert len(clock.slept) == 4 and all(
        s <= key_service.min_reload_interval.total_seconds() for s in clock.slept
    )


async def test_a_kid_rotated_in_just_after_a_reload_is_still_learnt(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    """Two rotations in quick succession (sig, then seal): a request sealed to the second key
    arrives within the reload interval of the first reload and must not be refused."""
    elsewhere = service(store, kek, clock)
    await elsewhere.start()
    clock.advance(key_service.min_reload_interval)
    signing = await elsewhere.rotate("sig")
    assert signing is not None
    assert await key_service.knows(signing.new.kid)  # reloads now
    sealing = await elsewhere.rotate("seal")
    assert sealing is not None

    known = await key_service.knows(sealing.new.kid)

    assert known
    assert clock.slept == [key_service.min_reload_interval.total_seconds()]


async def test_a_known_kid_needs_no_reload(
    store: MemoryStore, clock: FakeClock, key_service: KeyService
) -> None:
    ring = key_service.ring
    clock.advance(key_service.min_reload_interval)
    store.crypto.clear()  # a reload now would fail: the ring must not be read again

    assert await key_service.knows(ring.signing_kid)
    assert await key_service.knows(ring.sealing_kid)
    assert key_service.ring is ring


async def test_concurrent_askers_for_an_unknown_kid_share_one_reload(
    store: MemoryStore,
    kek: bytes,
    clock: FakeClock,
    key_service: KeyService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = service(store, kek, clock)
    await elsewhere.start()
    rotated = await elsewhere.rotate("sig")
    assert rotated is not None
    clock.advance(key_service.min_reload_interval)
    reads = 0
    read_keys = store.crypto_keys

    async def slow_read() -> list[StoredKey]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0)  # a real store read lets the other askers run meanwhile
        return await read_keys()

    monkeypatch.setattr(store, "crypto_keys", slow_read)

    known = await asyncio.gather(*(key_service.knows(rotated.new.kid) for _ in range(10)))

    assert known == [True] * 10
    assert reads == 1


async def test_knows_now_and_is_active_never_reload(
    store: MemoryStore, kek: bytes, clock: FakeClock, key_service: KeyService
) -> None:
    elsewhere = service(store, kek, clock)
    await elsewhere.start()
    old = key_service.ring.signing_kid
    rotated = await elsewhere.rotate("sig")
    assert rotated is not None
    clock.advance(key_service.min_reload_interval)

    assert key_service.knows_now(old)
    assert key_service.is_active(old)
    assert not key_service.knows_now(rotated.new.kid)
    assert not key_service.is_active(rotated.new.kid)

    await key_service.reload()

    assert key_service.knows_now(old) and not key_service.is_active(old)
    assert key_service.is_active(rotated.new.kid)
    assert key_service.is_active(key_service.ring.sealing_kid)


# --- automatic rotation ---------------------------------------------------------------------


async def test_rotate_if_older_rotates_only_the_keys_older_than_the_age(
    clock: FakeClock, key_service: KeyService
) -> None:
    clock.advance(5 * DAY)
    await key_service.rotate("sig")  # the signing key is now 5 days younger than the sealing one
    sealing = key_service.ring.sealing_kid
    clock.advance(5 * DAY)

    rotated = await key_service.rotate_if_older(timedelta(days=7))

    assert [r.new.use for r in rotated] == ["seal"]
    assert rotated[0].previous.kid == sealing
    assert key_service.ring.sealing_kid == rotated[0].new.kid


async def test_rotate_if_older_leaves_young_keys_alone(
    store: MemoryStore, clock: FakeClock, key_service: KeyService
) -> None:
    before = active_kids(store)
    clock.advance(7 * DAY - timedelta(seconds=1))

    assert await key_service.rotate_if_older(timedelta(days=7)) == []
    assert active_kids(store) == before


async def test_rotate_if_older_rotates_both_at_the_age(
    store: MemoryStore, clock: FakeClock, key_service: KeyService
) -> None:
    before = active_kids(store)
    clock.advance(7 * DAY)

    rotated = await key_service.rotate_if_older(timedelta(days=7))

    assert sorted(r.new.use for r in rotated) == ["seal", "sig"]
    assert set(active_kids(store).values()).isdisjoint(before.values())
