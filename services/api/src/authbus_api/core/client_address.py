"""Which client address a request counts under when it has no valid credentials (SPEC R6).

Algorithm: the TCP peer, unless it is a trusted proxy; then `X-Forwarded-For` is read from the
right (the entries a trusted proxy appended), skipping trusted proxies, and the first address
that is not one is the client. Entries further left were written by the client itself and are
never believed. A malformed entry ends the walk at the last address known to be good.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network
LOOPBACK: tuple[Network, ...] = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address to count a request under ("unknown" when there is no peer)."""
    if not peer:
        return "unknown"
    current = _parse(peer)
    if current is None:
        return peer
    if not forwarded_for or not _is_trusted(current, trusted):
        return str(current)
    for entry in reversed(forwarded_for.split(",")):
        hop = _parse(entry.strip())
        if hop is None:
            break
        current = hop
        if not _is_trusted(hop, trusted):
            break
    return str(current)


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _is_trusted(address: IPv4Address | IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def trusted_peer(peer: str | None, trusted: Sequence[Network]) -> bool:
    """Whether the TCP peer is one of the trusted proxies."""
    address = _parse(peer) if peer else None
    return address is not None and _is_trusted(address, trusted)


class Proxies:
    """The trusted proxies, with what they said remembered: parsing addresses costs
    microseconds, and peers and `X-Forwarded-For` chains repeat. At most `memo` answers are
    kept (then forgotten all at once), so made-up chains cannot grow it."""

    def __init__(self, trusted: Sequence[Network], memo: int = 4096) -> None:
        self.trusted = tuple(trusted)
        self._memo = memo
        self._clients: dict[tuple[str | None, str | None], str] = {}
        self._peers: dict[str | None, bool] = {}

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """`client_address` with these proxies."""
        key = (peer, forwarded_for)
        found = self._clients.get(key)
        if found is None:
            if len(self._clients) >= self._memo:
                self._clients.clear()
            found = self._clients[key] = client_address(peer, forwarded_for, self.trusted)
        return found

    def trusts(self, peer: str | None) -> bool:
        """Whether the TCP peer is one of these proxies."""
        found = self._peers.get(peer)
        if found is None:
            if len(self._peers) >= self._memo:
                self._peers.clear()
            found = self._peers[peer] = trusted_peer(peer, self.trusted)
        return found
