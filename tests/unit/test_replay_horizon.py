"""The replay horizon comes from the rate policies and is checked at start (SPEC R4, R7; ADR
0014): a new owner that replays less would forget locks and the strikes that escalate them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from authbus_api.policies import BUILT_IN, load_policies
from authbus_api.runner import run as run_api
from authbus_api.settings import ApiSettings, RateSettings
from authbus_ratelimit.runner import run as run_ratelimit
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.contracts.ratelimit import LeasePolicy
from authbus_shared.horizon import (
    MARGIN_S,
    SEED_POLICIES,
    checked_horizon,
    horizon_s,
    needed_s,
    policies_from_file,
)
from authbus_shared.settings import ConfigError, load

REPO = Path(__file__).resolve().parents[2]
SHORT = """
[[policy]]
name = "global"
scope = "account"
limit = 60
window_s = 60
lockout_s = 60
fail_mode = "closed"
routes = ["GET /v0/me"]
"""


def policy(window: int, lockout: int = 0, cap: int = 0, memory: int = 0) -> LeasePolicy:
    return LeasePolicy(
        name="p",
        limit=10,
        window_s=window,
        lockout_s=lockout,
        lockout_cap_s=cap,
        strike_memory_s=memory,
    )


def test_the_built_in_policies_need_window_plus_cap_plus_strike_memory() -> None:
    """The issue's case: 60 s windows, lockouts capped at 960 s, strikes remembered 600 s —
    more than the old 900 s default."""
    assert horizon_s(SEED_POLICIES) == 60 + 960 + 600 + MARGIN_S == 1680


@pytest.mark.parametrize(
    ("rule", "needed"),
    [
        (policy(60), 60),  # no lockout: the open window only
        (policy(60, lockout=60), 120),  # a lock in force and the window that breached
        (policy(60, lockout=60, cap=960, memory=600), 1620),
        (policy(30, lockout=300, cap=100), 330),  # a cap below the lockout: lockout_s holds
        (policy(60, lockout=60, cap=120, memory=3600), 60 + 3600 + 3600),  # memory > cap
    ],
)
def test_each_policy_needs_its_window_longest_lock_and_strike_memory(
    rule: LeasePolicy, needed: int
) -> None:
    assert needed_s(rule) == needed


def test_the_longest_need_over_the_policies_wins() -> None:
    assert horizon_s([policy(60), policy(3600, lockout=60), policy(10)]) == 3660 + MARGIN_S


def test_the_shared_seed_is_the_apis_built_in_set() -> None:
    """ratelimit cannot import the api: the shared copy must not drift from it."""
    assert tuple(p.policy().lease for p in BUILT_IN.policy) == SEED_POLICIES


def test_the_apis_policies_file_is_read_for_its_counting_fields() -> None:
    example = REPO / "config" / "rate-policies.toml"

    read = policies_from_file(example)

    assert read == tuple(p.lease for p in load_policies(example))
    assert policies_from_file(None) == SEED_POLICIES


@pytest.mark.parametrize(
    "text", ["not toml [", "[[policy]]\nname = 'x'\n", "nothing = 1\n", "policy = 3\n"]
)
def test_a_bad_policies_file_names_itself(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)

    with pytest.raises(ConfigError, match=str(bad)):
        policies_from_file(bad)


def test_unset_means_what_the_policies_need_and_more_is_fine() -> None:
    assert checked_horizon(None, SEED_POLICIES, variable="V") == timedelta(seconds=1680)
    assert checked_horizon(7200, SEED_POLICIES, variable="V") == timedelta(seconds=7200)


def test_a_horizon_shorter_than_the_policies_need_refuses_the_start_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"V_HORIZON: 900 s is shorter than the 1680 s"):
        checked_horizon(900, SEED_POLICIES, variable="V_HORIZON")


def test_ratelimit_checks_its_horizon_against_the_policies_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short = tmp_path / "short.toml"
    short.write_text(SHORT)
    monkeypatch.setenv("AUTHBUS_RATELIMIT_REPLAY_HORIZON_S", "900")

    with pytest.raises(ConfigError, match="AUTHBUS_RATELIMIT_REPLAY_HORIZON_S: 900 s"):
        load(RatelimitSettings).replay_horizon()  # the built-in policies need 1680 s

    monkeypatch.setenv("AUTHBUS_RATELIMIT_POLICIES_FILE", str(short))
    assert load(RatelimitSettings).replay_horizon() == timedelta(seconds=900)
    monkeypatch.delenv("AUTHBUS_RATELIMIT_REPLAY_HORIZON_S")
    assert load(RatelimitSettings).replay_horizon() == timedelta(seconds=120 + MARGIN_S)


async def test_ratelimit_refuses_to_start_before_it_touches_kafka() -> None:
    settings = RatelimitSettings(replay_horizon_s=900)

    with pytest.raises(ConfigError, match="AUTHBUS_RATELIMIT_REPLAY_HORIZON_S"):
        async with asyncio.timeout(5):
            await run_ratelimit(settings)


async def test_the_api_refuses_to_start_when_its_policies_need_more_than_its_horizon(
    tmp_path: Path,
) -> None:
    long_lock = tmp_path / "long.toml"
    long_lock.write_text(SHORT.replace("lockout_s = 60", "lockout_s = 3600"))
    settings = ApiSettings(rate=RateSettings(policies_file=long_lock, replay_horizon_s=1800))

    with pytest.raises(ConfigError, match="AUTHBUS_API_RATE__REPLAY_HORIZON_S: 1800 s"):
        async with asyncio.timeout(5):
            await run_api(settings)
