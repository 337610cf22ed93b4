"""The api's verdict cache (SPEC S3, A7; DESIGN "Staleness"): bounded, timed, revocable."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from authbus_api.core.verdict_cache import CachedVerdict, CredentialDigest, VerdictCache
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
    password_credential_id,
)

from .support import T0

TTL = timedelta(seconds=60)
NEGATIVE_TTL = timedelta(seconds=5)
DIGEST = CredentialDigest(b"k" * 32)


def sec(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cache(max_entries: int = 100) -> VerdictCache:
    return VerdictCache(max_entries=max_entries, ttl=TTL, negative_ttl=NEGATIVE_TTL)


def credential(
    raw: str = "tok-value",
    *,
    kind: CredentialKind = CredentialKind.BEARER,
    email: str | None = None,
) -> SealedCredential:
    return SealedCredential(kind=kind, secret=raw, email=email)


def valid(
    credential_id: str = "tok-1",
    valid_until: datetime | None = None,
    *,
    account_id: str = "acct-1",
    method: AuthMethod = AuthMethod.TOKEN,
    checked_at: datetime = T0,
) -> CredentialVerified:
    return CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=account_id, email=f"{account_id}@example.io"),
        scopes=("read",),
        method=method,
        credential_id=credential_id,
        valid_until=valid_until,
        checked_at=checked_at,
    )


INVALID = CredentialVerified(outcome=Outcome.INVALID)


def held(reply: CredentialVerified) -> CachedVerdict:
    """What the cache keeps of authz's reply (its expiry is not compared)."""
    return CachedVerdict.of(reply, T0)


def test_unknown_digest_is_a_miss() -> None:
    assert cache().get(DIGEST(credential()), T0) is None


def test_admitted_verdict_is_a_hit() -> None:
    verdicts, digest = cache(), DIGEST(credential())

    acted_on = verdicts.admit(digest, valid(), T0)

    assert acted_on == held(valid())
    assert verdicts.get(digest, sec(1)) == held(valid())


def test_valid_verdict_lives_ttl() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.admit(digest, valid(), T0)

    assert verdicts.get(digest, sec(59.999)) == held(valid())
    assert verdicts.get(digest, sec(60)) is None
    assert len(verdicts) == 0


def test_valid_verdict_lifetime_is_capped_by_valid_until() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.admit(digest, valid(valid_until=sec(10)), T0)

    assert verdicts.get(digest, sec(9)) is not None
    assert verdicts.get(digest, sec(10)) is None


def test_valid_until_beyond_ttl_does_not_extend_it() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.admit(digest, valid(valid_until=sec(3600)), T0)

    assert verdicts.get(digest, sec(60)) is None


def test_verdict_already_past_valid_until_is_not_cached() -> None:
    verdicts, digest = cache(), DIGEST(credential())

    verdicts.admit(digest, valid(valid_until=T0), T0)

    assert len(verdicts) == 0


@pytest.mark.parametrize(
    "outcome", [o for o in Outcome if o is not Outcome.VALID], ids=lambda o: o.value
)
def test_denials_are_kept_negative_ttl(outcome: Outcome) -> None:
    verdicts, digest = cache(), DIGEST(credential())
    denial = CredentialVerified(outcome=outcome)
    verdicts.admit(digest, denial, T0)

    assert verdicts.get(digest, sec(4.999)) == held(denial)
    assert verdicts.get(digest, sec(5)) is None


def test_least_recently_used_entry_is_evicted_first() -> None:
    verdicts = cache(max_entries=2)
    a, b, c = (DIGEST(credential(s)) for s in ("a", "b", "c"))
    verdicts.admit(a, valid("tok-a"), T0)
    verdicts.admit(b, valid("tok-b"), T0)
    verdicts.get(a, sec(1))  # a is now more recently used than b

    verdicts.admit(c, valid("tok-c"), sec(2))

    assert len(verdicts) == 2
    assert verdicts.get(b, sec(3)) is None
    assert verdicts.get(a, sec(3)) is not None
    assert verdicts.get(c, sec(3)) is not None


def test_readmitting_a_digest_replaces_its_entry() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.admit(digest, valid(), T0)

    verdicts.admit(digest, INVALID, sec(1))

    assert len(verdicts) == 1
    assert verdicts.get(digest, sec(2)) == held(INVALID)


def test_revoke_drops_every_entry_of_that_credential_and_only_those() -> None:
    """A7: the bearer and the Basic forms of one token are two entries with one credential id."""
    verdicts = cache()
    as_bearer = DIGEST(credential("tok"))
    as_basic = DIGEST(credential("tok", kind=CredentialKind.BASIC_TOKEN, email="a@x.io"))
    other = DIGEST(credential("other"))
    verdicts.admit(as_bearer, valid("tok-1"), T0)
    verdicts.admit(as_basic, valid("tok-1"), T0)
    verdicts.admit(other, valid("tok-2"), T0)

    dropped = verdicts.revoke("tok-1", sec(1))

    assert dropped == 2
    assert verdicts.get(as_bearer, sec(2)) is None
    assert verdicts.get(as_basic, sec(2)) is None
    assert verdicts.get(other, sec(2)) == held(valid("tok-2"))


def test_a_credential_down_to_one_entry_is_still_revoked_and_its_index_emptied() -> None:
    """The index keeps one digest as itself and more as a set (issue #13: memory); going from
    two to one and back to none must lose nothing."""
    verdicts = cache(max_entries=2)
    as_bearer = DIGEST(credential("tok"))
    as_basic = DIGEST(credential("tok", kind=CredentialKind.BASIC_TOKEN, email="a@x.io"))
    verdicts.admit(as_bearer, valid("tok-1"), T0)
    verdicts.admit(as_basic, valid("tok-1"), T0)
    verdicts.admit(DIGEST(credential("other")), valid("tok-2"), T0)  # evicts as_bearer

    assert verdicts.revoke("tok-1", sec(1)) == 1
    assert verdicts.get(as_basic, sec(2)) is None
    again = verdicts.admit(as_bearer, valid("tok-1", checked_at=sec(3)), sec(3))
    assert again.outcome is Outcome.REVOKED  # the revocation is remembered
    assert verdicts.revoke("tok-1", sec(4)) == 0  # nothing of it is left indexed


def test_revoking_an_uncached_credential_drops_nothing() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.admit(digest, valid("tok-1"), T0)

    assert verdicts.revoke("tok-9", sec(1)) == 0
    assert len(verdicts) == 1


def test_valid_reply_arriving_after_the_revocation_is_revoked_and_not_cached_valid() -> None:
    """A7, DESIGN "Staleness": ask authz, the revocation event lands, then authz's "valid"
    (read before the revocation) arrives. It must be neither honoured nor cached."""
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.revoke("tok-1", T0)

    acted_on = verdicts.admit(digest, valid("tok-1"), sec(0.2))

    assert acted_on.outcome is Outcome.REVOKED
    assert acted_on.account is None
    cached = verdicts.get(digest, sec(0.3))
    assert cached is None or cached.outcome is not Outcome.VALID


def test_revocation_still_holds_at_the_end_of_ttl() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.revoke("tok-1", T0)
    verdicts.revoke("tok-2", sec(60))  # any later event prunes old revocations

    assert verdicts.admit(digest, valid("tok-1"), sec(60)).outcome is Outcome.REVOKED


def test_revocation_of_one_credential_does_not_touch_another() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.revoke("tok-1", T0)

    assert verdicts.admit(digest, valid("tok-2"), sec(1)) == held(valid("tok-2"))


def test_revocations_are_forgotten_after_ttl() -> None:
    """Revocations are remembered `ttl` (the longest a stale "valid" can live); later events
    prune them, so the memory stays bounded."""
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.revoke("tok-1", T0)
    verdicts.revoke("tok-2", sec(61))

    assert verdicts.admit(digest, valid("tok-1"), sec(61)).outcome is Outcome.VALID


# --- account changes (password changed, 2FA on, disabled) ---------------------------------


def test_account_change_drops_every_cached_verdict_of_the_account_and_only_those() -> None:
    """A7: an AccountChanged drops the account's tokens, keys and password verdicts at once."""
    verdicts = cache()
    mine = {
        DIGEST(credential("tok")): valid("tok-1"),
        DIGEST(credential("k", kind=CredentialKind.KEY, email="a@x.io")): valid(
            "key-1", method=AuthMethod.KEY
        ),
        DIGEST(credential("pw", kind=CredentialKind.PASSWORD, email="a@x.io")): valid(
            password_credential_id("acct-1"), method=AuthMethod.PASSWORD
        ),
    }
    theirs = DIGEST(credential("their-tok"))
    for digest, verdict in mine.items():
        verdicts.admit(digest, verdict, T0)
    verdicts.admit(theirs, valid("tok-2", account_id="acct-2"), T0)

    dropped = verdicts.account_changed("acct-1", changed_at=sec(1), now=sec(1))

    assert dropped == 3
    assert all(verdicts.get(digest, sec(2)) is None for digest in mine)
    assert verdicts.get(theirs, sec(2)) == held(valid("tok-2", account_id="acct-2"))


@pytest.mark.parametrize("checked_s", [0, 0.999, 1], ids=["before", "just-before", "at"])
def test_valid_verdict_checked_before_the_change_is_answered_but_not_cached(
    checked_s: float,
) -> None:
    """The race: ask authz, the change event lands, then authz's "valid" read before the
    change arrives. It was in flight with the change: answered once, never cached."""
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.account_changed("acct-1", changed_at=sec(1), now=sec(1.1))
    stale = valid(checked_at=sec(checked_s))

    acted_on = verdicts.admit(digest, stale, sec(1.2))

    assert acted_on == held(stale)
    assert verdicts.get(digest, sec(1.3)) is None
    assert len(verdicts) == 0


def test_valid_verdict_checked_after_the_change_is_cached() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.account_changed("acct-1", changed_at=sec(1), now=sec(1))
    fresh = valid(checked_at=sec(1.001))

    assert verdicts.admit(digest, fresh, sec(2)) == held(fresh)
    assert verdicts.get(digest, sec(3)) == held(fresh)


def test_account_change_does_not_stop_caching_another_accounts_verdicts() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.account_changed("acct-1", changed_at=sec(1), now=sec(1))
    other = valid("tok-2", account_id="acct-2", checked_at=T0)

    verdicts.admit(digest, other, sec(2))

    assert verdicts.get(digest, sec(3)) == held(other)


def test_account_change_is_remembered_until_the_end_of_ttl() -> None:
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.account_changed("acct-1", changed_at=T0, now=T0)
    verdicts.account_changed("acct-2", changed_at=sec(60), now=sec(60))  # prunes older ones

    verdicts.admit(digest, valid(checked_at=T0), sec(60))

    assert len(verdicts) == 0


def test_account_changes_are_forgotten_after_ttl() -> None:
    """Remembered `ttl` (the longest a stale verdict can be in flight); later events prune
    them, so the memory stays bounded."""
    verdicts, digest = cache(), DIGEST(credential())
    verdicts.account_changed("acct-1", changed_at=T0, now=T0)
    verdicts.account_changed("acct-2", changed_at=sec(61), now=sec(61))

    verdicts.admit(digest, valid(checked_at=T0), sec(61))

    assert verdicts.get(digest, sec(62)) == held(valid(checked_at=T0))


# --- the digest -------------------------------------------------------------------------------


def test_digest_is_stable_for_one_key() -> None:
    digest = CredentialDigest(b"k" * 32)

    assert digest(credential()) == digest(credential())
    assert digest(credential()) == CredentialDigest(b"k" * 32)(credential())


def test_digest_differs_per_key_instance() -> None:
    assert CredentialDigest()(credential()) != CredentialDigest()(credential())


def test_digest_holds_no_credential() -> None:
    raw = DIGEST(credential("a-very-recognisable-secret"))

    assert len(raw) == 20
    assert b"recognisable" not in raw


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (credential("tok"), credential("tok", kind=CredentialKind.BASIC_TOKEN)),
        (
            credential("pw", kind=CredentialKind.PASSWORD, email="a@x.io"),
            credential("pw", kind=CredentialKind.KEY, email="a@x.io"),
        ),
        (
            credential("pw", kind=CredentialKind.PASSWORD, email="a@x.io"),
            credential("pw", kind=CredentialKind.PASSWORD, email="b@x.io"),
        ),
        (credential("tok"), credential("tok2")),
        (credential("Secret"), credential("secret")),
        (
            credential("pw", kind=CredentialKind.PASSWORD, email="a@x.io"),
            credential("PW", kind=CredentialKind.PASSWORD, email="a@x.io"),
        ),
    ],
    ids=["kind", "kind-basic", "email", "secret", "secret-case", "password-case"],
)
def test_digest_differs_per_kind_email_and_secret(
    one: SealedCredential, other: SealedCredential
) -> None:
    assert DIGEST(one) != DIGEST(other)


def test_digest_ignores_email_case() -> None:
    upper = credential("pw", kind=CredentialKind.PASSWORD, email="Alice@Example.IO")
    lower = credential("pw", kind=CredentialKind.PASSWORD, email="alice@example.io")

    assert DIGEST(upper) == DIGEST(lower)
