"""Who the caller is, as headers an upstream can trust (SPEC G2, G3; `docs/contracts.md`).

`X-Authbus-Account-Id`, `-Account-Email`, `-Scopes` (space separated), `-Auth-Method` and
`-Locale`. Header values are bytes a proxy passes on untouched only when they are visible
ASCII, so every value is encoded by one rule: each byte of its UTF-8 outside 0x20-0x7E, and
`%` itself, becomes `%XX` (RFC 3986 §2.1). ASCII without `%` (nearly every value) is sent as
is; `urllib.parse.unquote` gives any value back exactly. No account data can break a header
(no CR, LF or non-latin-1 character ever reaches the wire) or fail to encode.
"""

from __future__ import annotations

from authbus_api.core.access import Principal

_KEEP = frozenset(range(0x20, 0x7F)) - {ord("%")}


def header_value(text: str) -> str:
    """`text` as a header value by the rule above."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return "".join(chr(b) if b in _KEEP else f"%{b:02X}" for b in text.encode("utf-8"))


def identity_headers(who: Principal) -> dict[str, str]:
    """The caller's identity, for an upstream to trust (the gateway, forward auth)."""
    account = who.account
    return {
        "X-Authbus-Account-Id": header_value(account.id),
        "X-Authbus-Account-Email": header_value(account.email),
        "X-Authbus-Scopes": header_value(" ".join(who.scopes)),
        "X-Authbus-Auth-Method": who.method.value,
        "X-Authbus-Locale": header_value(account.locale or ""),
    }
