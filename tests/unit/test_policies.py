"""Rate policies from configuration (SPEC R1, R2, R6, R7, R8): the built-in set, the example
file, and what a bad file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbus_api.policies import BUILT_IN, load_policies
from authbus_shared.settings import ConfigError

EXAMPLE = Path(__file__).parents[2] / "config" / "rate-policies.toml"


def test_the_built_in_set_is_the_seeds_60_per_minute_with_a_60_s_lockout() -> None:
    """R1, R3, R6: per account and, without valid credentials, per address."""
    policies = {p.lease.name: p for p in load_policies(None)}

    assert set(policies) == {"global", "anonymous"}
    for policy, scope in ((policies["global"], "account"), (policies["anonymous"], "address")):
        assert (policy.lease.limit, policy.lease.window_s, policy.lease.lockout_s) == (60, 60, 60)
        assert policy.scope == scope
        assert policy.routes == frozenset()
        assert policy.applies("GET /anything", scope)


def test_the_example_file_starts_with_the_built_in_set_and_adds_a_route_policy() -> None:
    """R2: a stricter policy for one route, on top of the global one."""
    policies = load_policies(EXAMPLE)

    assert policies[:2] == load_policies(None)
    burst = policies[2]
    assert burst.applies("GET /v0/me", "account")
    assert not burst.applies("POST /v0/tokens", "account")
    assert not burst.applies("GET /v0/me", "address")
    assert burst.fail_mode == "closed"
    assert len(BUILT_IN.policy) == 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[[policy]]\nname='a'\nlimit=0\nwindow_s=60\n", "limit"),
        ("[[policy]]\nname='a'\nlimit=1\nwindow_s=60\nspeed=3\n", "speed"),
        (
            "[[policy]]\nname='a'\nlimit=1\nwindow_s=60\n[[policy]]\nname='a'\nlimit=2\nwindow_s=1\n",
            "unique",
        ),
        ("[[policy]]\nname='a'\nlimit=1\nwindow_s=60\nlockout_s=60\nlockout_cap_s=10\n", "cap"),
        ("[[policy]]\nname='A b'\nlimit=1\nwindow_s=60\n", "name"),
        ("policy = [", "policies file"),
        ("", "policy"),
    ],
)
def test_a_bad_file_fails_at_start_naming_the_problem(
    tmp_path: Path, text: str, names: str
) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=names):
        load_policies(path)


def test_a_missing_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_policies(tmp_path / "nowhere.toml")
