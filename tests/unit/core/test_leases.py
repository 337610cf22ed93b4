"""Quota leases, the owner's side (ADR 0010; SPEC R1, R3, R4, R7): asks and releases with their
broker times in, grants and lock events out. Recalls and strike checkpoints (R9, R7 across
fail-over): test_lease_recalls.py."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from authbus_ratelimit.core.leases import lockout_seconds
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    SubjectLocked,
)

from .lease_support import (
    ALL,
    KEY,
    LOCKING,
    PER_MINUTE,
    SHORT_MEMORY,
    STRIKING,
    SUBJECT,
    Book,
    Message,
    acquire,
    ask,
    breach,
    fill,
    granted,
    play,
    release,
    s,
)

# --- windows and grants ------------------------------------------------------------------


def test_the_first_ask_opens_a_window_at_its_time() -> None:
    """R1: windows start at first use and last the policy's window."""
    book = Book()

    reply = granted(book, ask(), s(7.5))

    assert (reply.key, reply.window_start, reply.window_end) == (KEY, s(7.5), s(67.5))
    assert reply.blocked_until is None
    assert len(book) == 1


def test_grants_are_half_the_rest_shared_among_the_holders() -> None:
    """R4: grant = min(want, r, max(1, ceil(r / 2h))), h counting the asker."""
    book = Book()

    first = granted(book, ask("api-a"), s(0))  # r=60, h=1: 30
    second = granted(book, ask("api-b"), s(1))  # r=30, h=2: ceil(30/4)=8
    again = granted(book, ask("api-a"), s(2))  # r=22, h=2: ceil(22/4)=6
    third = granted(book, ask("api-c"), s(3))  # r=16, h=3: ceil(16/6)=3

    assert [r.granted for r in (first, second, again, third)] == [30, 8, 6, 3]
    assert [r.remaining for r in (first, second, again, third)] == [30, 22, 16, 13]
    assert {r.window_start for r in (first, second, again, third)} == {s(0)}


def test_want_caps_the_grant() -> None:
    book = Book()

    assert granted(book, ask(want=10), s(0)).granted == 10
    assert granted(book, ask(want=10), s(1)).remaining == 40


def test_the_last_unit_is_granted_whatever_the_holders() -> None:
    """R4: max(1, ...) — a small rest still goes out one at a time."""
    policy = LeasePolicy(name="default", limit=2, window_s=60)
    book = Book()
    granted(book, ask("api-a", policy=policy), s(0))  # ceil(2/2)=1

    last = granted(book, ask("api-b", policy=policy), s(1))  # ceil(1/4) -> 1

    assert (last.granted, last.remaining) == (1, 0)


@dataclass
class _Holder:
    """An api instance as the owner sees it through its messages: it spends only what it
    received, for the window it received it in, and says so in its next ask."""

    name: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    units: int = 0
    received: int = 0
    spent: int = 0

    def ask(self, rng: random.Random, policy: LeasePolicy, key: str) -> AcquireLease:
        return AcquireLease(
            key=key,
            subject=SUBJECT,
            policy=policy,
            instance=self.name,
            want=rng.choice((1, 2, 5, 50, 10_000)),
            prefetch=rng.random() < 0.3,
            window_start=self.window_start,
            received=self.received,
            spent=self.spent,
        )

    def receive(self, reply: LeaseGranted) -> None:
        if reply.window_start != self.window_start:
            self.window_start, self.window_end = reply.window_start, reply.window_end
            self.units = self.received = self.spent = 0
        self.units += reply.granted
        self.received += reply.granted

    def admit(self, at: datetime) -> datetime | None:
        """Spend one unit if there is one for the window at `at`; the window admitted in."""
        if self.units and self.window_end is not None and at < self.window_end:
            self.units -= 1
            self.spent += 1
            return self.window_start
        return None


@pytest.mark.parametrize("seed", range(25))
def test_no_window_ever_admits_more_than_its_limit(seed: int) -> None:
    """R1, R4 (the bound): whatever the instances, wants, prefetches, lost replies (a grant
    the asker never received, taken back at its next ask) and policy changes, the requests
    admitted in a window are at most the limit of the ask that opened it."""
    rng = random.Random(seed)
    book = Book()
    admitted: dict[datetime, int] = {}
    limits: dict[datetime, int] = {}
    at = s(0)
    holders = [_Holder(f"api-{n}") for n in range(rng.randint(1, 8))]
    policy = PER_MINUTE
    for _ in range(600):
        at += timedelta(seconds=rng.choice((0, 0, 0.1, 0.5, 2)))
        if rng.random() < 0.05:
            policy = LeasePolicy(
                name="default",
                limit=rng.choice((1, 3, 10, 60, 1_000)),
                window_s=rng.choice((1, 5, 60)),
                lockout_s=rng.choice((0, 0, 3)),
                lockout_cap_s=20,
                strike_memory_s=30,
            )
        holder = rng.choice(holders)
        if rng.random() < 0.5:
            message = holder.ask(rng, policy, KEY)
            reply, _ = acquire(book, message, at)
            limits.setdefault(reply.window_start, policy.limit)
            assert reply.window_start <= at < reply.window_end
            assert 0 <= reply.granted <= message.want
            if rng.random() < 0.9:  # else the reply is lost: the asker stopped waiting
                holder.receive(reply)
        for _ in range(rng.randint(0, 6)):
            window = holder.admit(at)
            if window is not None:
                admitted[window] = admitted.get(window, 0) + 1
    assert len(admitted) > 2
    for window, count in admitted.items():
        assert count <= limits[window], (window, count)


def test_every_unit_is_allocated_when_every_instance_keeps_asking() -> None:
    """R4, R7: the rule itself strands nothing: four instances asking in turn get all 60."""
    book = Book()
    instances = ["api-a", "api-b", "api-c", "api-d"]
    total = asks = 0
    for n in range(1_000):
        reply = granted(book, ask(instances[n % 4], prefetch=True), s(n * 0.01))
        if reply.granted == 0:
            break
        total += reply.granted
        asks += 1

    assert (total, reply.remaining, reply.window_start) == (60, 0, s(0))
    assert asks < 60  # slices shrink geometrically: far fewer asks than units


# --- breaches and locks ------------------------------------------------------------------


def test_a_breach_locks_the_key_and_tells_every_instance() -> None:
    """R3: `r = 0` with a request waiting locks the key for `lockout_s` and emits
    SubjectLocked."""
    book = Book()
    assert granted(book, ask(policy=LOCKING), s(0)).granted == 2
    assert granted(book, ask(policy=LOCKING), s(1)).remaining == 0

    reply, locked = acquire(book, ask("api-a", 1, policy=LOCKING), s(10))  # all 3 spent

    assert (reply.granted, reply.remaining, reply.blocked_until) == (0, 0, s(40))
    assert (reply.window_start, reply.window_end) == (s(0), s(60))
    assert locked == SubjectLocked(
        subject=SUBJECT, key=KEY, policy="default", until=s(40), strikes=1, at=s(10)
    )


def test_no_breach_while_units_are_out_with_another_instance() -> None:
    """R3, R4: the window is allocated but api-a has not spent its slice: api-b's request is
    refused without locking the subject; once api-a reports it spent, the next ask locks."""
    book = Book()
    assert granted(book, ask("api-a", policy=LOCKING, spent=0), s(0)).granted == 2
    assert granted(book, ask("api-b", policy=LOCKING), s(1)).granted == 1

    early = granted(book, ask("api-b", policy=LOCKING), s(2))
    granted(book, ask("api-a", policy=LOCKING, spent=1, prefetch=True), s(3))
    still = granted(book, ask("api-b", policy=LOCKING), s(4))
    reply, locked = acquire(book, ask("api-a", policy=LOCKING, spent=2), s(5))

    assert (early.granted, early.outstanding, early.blocked_until) == (0, 2, None)
    assert (still.granted, still.outstanding) == (0, 1)
    assert locked is not None
    assert reply.blocked_until == s(35)


# --- strikes (fair use) ------------------------------------------------------------------


def test_breaches_in_a_row_double_the_lockout_up_to_the_cap() -> None:
    """R7: each breach within `strike_memory_s` of the last doubles the lockout, capped."""
    book = Book()

    first = breach(book, s(0))  # 10 s
    second = breach(book, s(20))  # 20 s
    third = breach(book, s(45))  # 40 s, capped at 35
    fourth = breach(book, s(180))  # 135 s after the last: more than the memory

    assert [e.strikes for e in (first, second, third, fourth)] == [1, 2, 3, 1]
    assert [e.until for e in (first, second, third, fourth)] == [s(10), s(40), s(80), s(190)]


def test_a_breach_exactly_at_the_memory_still_counts_in_a_row() -> None:
    book = Book()
    breach(book, s(0))

    assert breach(book, s(100)).strikes == 2


@pytest.mark.parametrize(
    ("lockout_s", "cap", "strikes", "expected"),
    [
        (10, 35, 1, 10),
        (10, 35, 2, 20),
        (10, 35, 3, 35),
        (10, 35, 10_000, 35),
        (10, 0, 5, 10),  # cap 0: the lockout never grows
        (10, 5, 5, 10),  # a cap below the lockout never shortens it
        (86_400, 86_400, 3, 86_400),
    ],
)
def test_lockout_seconds(lockout_s: int, cap: int, strikes: int, expected: int) -> None:
    """R7."""
    policy = LeasePolicy(
        name="default", limit=1, window_s=60, lockout_s=lockout_s, lockout_cap_s=cap
    )

    assert lockout_seconds(policy, strikes) == expected


def test_without_strike_memory_every_breach_is_a_first() -> None:
    """R7: `strike_memory_s = 0` remembers nothing."""
    policy = LeasePolicy(name="default", limit=1, window_s=60, lockout_s=10, lockout_cap_s=80)
    book = Book()
    breach(book, s(0), policy)

    again = breach(book, s(10), policy)

    assert (again.strikes, again.until) == (1, s(20))


# --- releases ----------------------------------------------------------------------------


def test_a_release_returns_units_that_others_can_then_get() -> None:
    """R7: an idle slice goes back to its window for the other instances."""
    policy = LeasePolicy(name="default", limit=4, window_s=60, lockout_s=30)
    book = Book()
    assert fill(book, policy, s(0)) == 4

    book.release(release("api-a", 3, s(0)), s(5))
    reply = granted(book, ask("api-b", want=10, policy=policy), s(6))

    assert (reply.granted, reply.remaining) == (1, 2)  # r=3, h=2 (api-a still holds 1)


def test_a_release_for_an_ended_window_is_ignored() -> None:
    book = Book()
    granted(book, ask("api-a"), s(0))  # 30
    granted(book, ask("api-a", want=5), s(60))  # a new window

    book.release(release("api-a", 30, s(0)), s(61))  # the old window's slice
    assert granted(book, ask("api-a", want=1), s(62)).remaining == 54

    book.release(release("api-a", 6, s(60)), s(120))  # the current window, but at its end
    assert granted(book, ask("api-a", want=1), s(119)).remaining == 53  # (a late ask)


def test_a_release_gives_back_only_what_the_instance_holds() -> None:
    book = Book()
    granted(book, ask("api-a", want=2), s(0))
    granted(book, ask("api-b", want=5), s(0))

    book.release(release("api-a", 50, s(0)), s(1))
    book.release(release("api-c", 50, s(0)), s(1))  # holds nothing
    book.release(release("api-a", 50, s(0)), s(1))  # nothing left
    reply = granted(book, ask("api-b"), s(2))

    # back to 55 unallocated, and api-b is the only holder again: ceil(55/2)
    assert (reply.granted, reply.remaining) == (28, 27)


def test_a_release_for_an_unknown_key_is_ignored() -> None:
    book = Book()

    book.release(release("api-a", 1, s(0)), s(1))

    assert len(book) == 0


# --- policies ----------------------------------------------------------------------------


def test_a_window_keeps_the_policy_of_the_ask_that_opened_it() -> None:
    """R1: a later ask with other parameters changes nothing until the next window, which
    then takes its policy."""
    small = LeasePolicy(name="default", limit=2, window_s=60)
    bigger = LeasePolicy(name="default", limit=100, window_s=10, lockout_s=5)
    book = Book()
    assert fill(book, small, s(0)) == 2

    during, locked = acquire(book, ask(policy=bigger), s(20))  # the window's limit and lockout
    after = granted(book, ask(policy=bigger), s(60))

    assert (during.granted, during.remaining, during.window_end) == (0, 0, s(60))
    assert (during.blocked_until, locked) == (None, None)  # `small` has no lockout
    assert (after.granted, after.remaining, after.window_end) == (50, 50, s(70))


# --- recovery ----------------------------------------------------------------------------


def traffic(seed: int, n: int = 600) -> list[Message]:
    """A seeded stream of asks and releases on a few keys, with locks and strikes."""
    rng = random.Random(seed)
    policies = {
        "strict:acct:1": LeasePolicy(
            name="strict", limit=5, window_s=10, lockout_s=3, lockout_cap_s=20, strike_memory_s=30
        ),
        "default:acct:1": LeasePolicy(name="default", limit=60, window_s=60),
        "default:addr:10.0.0.1": LeasePolicy(name="default", limit=20, window_s=5, lockout_s=2),
    }
    starts: dict[str, datetime] = {}
    at = s(0)
    out: list[Message] = []
    for _ in range(n):
        at += timedelta(seconds=rng.choice((0, 0.05, 0.3, 1)))
        key = rng.choice(list(policies))
        instance = rng.choice(("api-a", "api-b", "api-c"))
        if key in starts and rng.random() < 0.15:
            out.append((release(instance, rng.randint(1, 10), starts[key], key=key), at))
        else:
            want = rng.randint(1, 10)
            prefetch = rng.random() < 0.2
            spent = ALL if rng.random() < 0.7 else 0
            message = ask(
                instance, want, policy=policies[key], key=key, prefetch=prefetch, spent=spent
            )
            out.append((message, at))
            starts.setdefault(key, at)  # a guess: stale after the first window, then ignored
    return out


@pytest.mark.parametrize("seed", range(5))
def test_replaying_the_log_into_a_fresh_book_gives_the_same_replies(seed: int) -> None:
    """R4 with failures: the book is a pure function of the messages and their broker times,
    so a new owner replaying the partition rebuilds the same grants, locks and strikes."""
    messages = traffic(seed)

    first = play(Book(), messages)
    replayed = play(Book(), messages)

    assert first == replayed
    events = [a.locked for a in first if a.locked is not None]
    assert any(e.strikes > 1 for e in events)  # the stream exercised strikes in a row
    assert any(a.recall is not None for a in first)  # and recalls


@pytest.mark.parametrize("seed", range(5))
def test_sweeping_at_the_latest_time_changes_no_reply(seed: int) -> None:
    """Memory: what `sweep` forgets would not have mattered to any later message."""
    messages = traffic(seed)

    assert play(Book(), messages, sweep=True) == play(Book(), messages)


# --- memory ------------------------------------------------------------------------------


def test_sweep_drops_only_keys_with_nothing_left_to_remember() -> None:
    book = Book()
    granted(book, ask(key="open"), s(50))  # window until s(110)
    granted(book, ask(key="ended"), s(0))  # window until s(60)
    breach(book, s(40), LOCKING.model_copy(update={"lockout_s": 100}))  # KEY: locked to s(140)
    book.acquire(ask(key="struck", policy=STRIKING), s(0))
    book.acquire(ask(key="struck", policy=STRIKING), s(1))  # locked to s(11), remembered to s(101)
    book.acquire(ask(key="forgotten", policy=SHORT_MEMORY), s(0))
    book.acquire(ask(key="forgotten", policy=SHORT_MEMORY), s(1))  # remembered to s(31)

    dropped = book.sweep(s(90))

    assert dropped == 2  # "ended" and "forgotten"
    assert len(book) == 3
    assert book.sweep(s(101)) == 0  # "struck": a strike at s(1) is remembered through s(101)
    assert book.sweep(s(101.001)) == 1
    assert book.sweep(s(110)) == 1  # "open"
    assert book.sweep(s(139.999)) == 0
    assert book.sweep(s(140)) == 1
    assert len(book) == 0


def test_sweep_at_the_exact_window_end_drops_the_key() -> None:
    book = Book()
    granted(book, ask(), s(0))

    assert book.sweep(s(59.999)) == 0
    assert book.sweep(s(60)) == 1
    assert len(book) == 0
