"""Scopes (SPEC A8): what a credential may do, and who decides it.

Operators grant an account a set of scopes (`Account.scopes`, changed only by the operators'
`GrantScopes`; see `accounts.py`). Nobody grants themselves a scope:
- Issuing (`ungranted`): a new token or key may carry only scopes inside the account's grant
  and, when an authenticated token or key asks for it (`CreateKey.within`), inside that
  credential's scopes. The scopes outside are named in the refusal (`scope_not_granted`).
- Verifying (`effective`): a valid token or key carries its own scopes intersected with the
  account's grant *as read now*, so a scope taken away stops applying at the next verification
  (the api drops its cached verdicts on the broadcast `AccountChanged(scopes_changed)`), and a
  token made before grants existed loses the scopes it gave itself. A password verdict carries
  the whole grant (the password is the account's master credential).

Pure functions of tuples; the order of a credential's own scopes is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

SCOPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789:._-")
MAX_SCOPE_CHARS = 64


def valid_scopes(scopes: Iterable[str]) -> bool:
    """Lower-case names of 1 to 64 characters from `SCOPE_CHARS` (no spaces: the JWT's `scope`
    claim is space separated)."""
    return all(0 < len(s) <= MAX_SCOPE_CHARS and set(s) <= SCOPE_CHARS for s in scopes)


def normalized(scopes: Iterable[str]) -> tuple[str, ...]:
    """Sorted, without duplicates: how a credential's scopes and a grant are shown."""
    return tuple(sorted(set(scopes)))


def ungranted(
    asked: Iterable[str], grant: Iterable[str], within: Iterable[str] | None = None
) -> tuple[str, ...]:
    """The asked scopes a new credential may not carry (sorted; empty: all may): those outside
    the account's `grant`, or outside `within` (the asking credential's scopes) when given."""
    allowed = set(grant)
    if within is not None:
        allowed &= set(within)
    return normalized(set(asked) - allowed)


def effective(scopes: Iterable[str], grant: Iterable[str]) -> tuple[str, ...]:
    """A credential's scopes that still apply: those inside the account's current grant."""
    granted = set(grant)
    return tuple(s for s in scopes if s in granted)
