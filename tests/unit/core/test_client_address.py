"""Which address a request without valid credentials counts under (SPEC R6)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from authbus_api.core.client_address import client_address

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", None, "203.0.113.7"),  # no proxy
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),  # one trusted proxy
        ("10.0.0.2", "198.51.100.1, 10.0.0.9", "198.51.100.1"),  # two proxies
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # client-written entries ignored
        ("10.0.0.2", "garbage, 198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, garbage", "10.0.0.2"),  # malformed: last good address
        ("10.0.0.2", "10.0.0.3", "10.0.0.3"),  # all trusted: the leftmost known
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("10.0.0.2", None, "10.0.0.2"),
        (None, "198.51.100.1", "unknown"),
        ("not-an-ip", None, "not-an-ip"),
    ],
)
def test_the_client_is_the_first_untrusted_hop_from_the_right(
    peer: str | None, forwarded: str | None, expected: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_with_no_trusted_proxy_the_header_is_never_believed() -> None:
    assert client_address("10.0.0.2", "198.51.100.1", []) == "10.0.0.2"
