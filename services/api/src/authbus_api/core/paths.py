"""The one form of a request path that is judged, matched and sent upstream (SPEC A11).

Normalisation, after RFC 3986 §6.2.2 (syntax-based) with the rules a proxy in front could
read differently made explicit:

1. The input is the path as sent on the wire (still percent-encoded, the query removed). It
   must start with `/`.
2. Refused (None, answered 400), because proxies and servers disagree on what they mean:
   - any raw byte that is not a visible ASCII character allowed in a path (controls, space,
     non-ASCII, `\\`, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, `[`, `]`, `#`);
   - a raw `;` (Tomcat, Jetty and Spring cut `;params` off a segment: `/public/..;/admin`);
   - a malformed escape (`%` not followed by two hex digits);
   - an escaped `/` (`%2F`) or `\\` (`%5C`) (some proxies decode them into separators), an
     escaped `%` (`%25`, a second decoding would change the path), an escaped control
     character (`%00`-`%1F`, `%7F`);
   - dot segments that climb above the root (`/../admin`).
3. Normalised:
   - escapes of unreserved characters are decoded (`/%61dmin` is `/admin`, `%2E` is `.`);
     every other escape keeps its meaning and gets upper-case hex (`%c3%a9` is `%C3%A9`);
   - empty segments are dropped: repeated slashes are one (`//admin` is `/admin`, as nginx's
     default `merge_slashes`), and a trailing slash is dropped (`/admin/` is `/admin`);
   - dot segments are removed (RFC 3986 §5.2.4), after decoding: `/public/%2e%2e/admin` is
     `/admin`.
The result is canonical: normalising it again gives it back. Case is significant.

Cost: a path that is already canonical (the common case) is recognised by one regular
expression match and returned as is.
"""

from __future__ import annotations

import re

_ALPHANUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UNRESERVED = frozenset(_ALPHANUM + "-._~")
# pchar (RFC 3986 §3.3) without ";" (refused, see above) and without "%" (escapes, handled).
_PLAIN = frozenset(_ALPHANUM + "-._~" + "!$&'()*+,=" + ":@")
_REFUSED_ESCAPES = frozenset({0x2F, 0x5C, 0x25, 0x7F, *range(0x20)})
_HEX = frozenset("0123456789abcdefABCDEF")
# Already canonical: non-empty segments of plain characters, none of them `.` or `..`.
_CANONICAL = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+|/")


def normalise(raw: str) -> str | None:
    """The canonical form of the path `raw` (see the module's rules), or None when it is
    malformed or ambiguous."""
    if _CANONICAL.fullmatch(raw):
        return raw
    if not raw.startswith("/"):
        return None
    kept: list[str] = []
    for segment in raw.split("/"):
        decoded = _segment(segment)
        if decoded is None:
            return None
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if not kept:
                return None  # above the root
            kept.pop()
            continue
        kept.append(decoded)
    return "/" + "/".join(kept)


def _segment(segment: str) -> str | None:
    """One segment with unreserved escapes decoded and the others upper-cased; None if it
    holds anything refused."""
    if "%" not in segment:
        return segment if all(c in _PLAIN for c in segment) else None
    out: list[str] = []
    i, end = 0, len(segment)
    while i < end:
        char = segment[i]
        if char != "%":
            if char not in _PLAIN:
                return None
            out.append(char)
            i += 1
            continue
        hex_digits = segment[i + 1 : i + 3]
        if len(hex_digits) != 2 or not all(h in _HEX for h in hex_digits):
            return None
        byte = int(hex_digits, 16)
        if byte in _REFUSED_ESCAPES:
            return None
        out.append(chr(byte) if chr(byte) in UNRESERVED else "%" + hex_digits.upper())
        i += 3
    return "".join(out)


_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def split_target(target: str) -> tuple[str, str]:
    """A request target as (path, query): the query starts at the first `?` (without it:
    empty). The absolute form (`http://host/path`, RFC 9112 §3.2.2) is its path; an
    authority with no path is `/`."""
    scheme_and_host = _ABSOLUTE.match(target)
    if scheme_and_host is not None:
        target = target[scheme_and_host.end() :]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query
