"""Which language an answer speaks (SPEC E3).

Algorithm: the client's `Accept-Language` first, best q-value first (ties keep the header's
order; `q=0` means "not this one"; `*` says nothing). Tags are matched case-insensitively, with
`-` or `_` (`en-US`, `fr_ca`, `FR`), by Babel's `negotiate_locale`, which falls back from a
region to its language (`fr_CA` -> `fr`). When nothing in the header is supported: the
account's default locale (known once the credential was checked), then the deployment's.

Errors: none; a malformed header counts as absent. At most 32 entries of a header are read.
"""

from __future__ import annotations

from collections.abc import Sequence

from babel.core import negotiate_locale

SUPPORTED: tuple[str, ...] = ("en", "fr", "de", "es")
MAX_ENTRIES = 32


def preferences(accept_language: str | None) -> list[str]:
    """The tags of an `Accept-Language` header, best first, `-` written `_`."""
    if not accept_language:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")[:MAX_ENTRIES]):
        tag, *params = (p.strip() for p in part.split(";"))
        if not tag or tag == "*" or len(tag) > 35:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-min(q, 1.0), index, tag.replace("-", "_")))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(
    accept_language: str | None,
    account_locale: str | None,
    default: str,
    supported: Sequence[str] = SUPPORTED,
) -> str:
    """The supported language to answer in (one of `supported`, as written there)."""
    by_lower = {s.lower(): s for s in supported}
    for candidates in (
        preferences(accept_language),
        [account_locale.replace("-", "_")] if account_locale else [],
        [default],
    ):
        found = negotiate_locale(candidates, list(supported), sep="_") if candidates else None
        if found is not None:
            return by_lower.get(found.lower(), by_lower.get(found.split("_")[0].lower(), default))
    return supported[0]
