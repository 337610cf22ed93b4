"""`authbus-admin`: accounts, scope grants, tokens, legacy keys and signing keys, for operators
(SPEC G4, A8).

Passwords are read from a prompt or stdin, never from argv. A new token or key is printed
once and never stored here. `--json` prints one JSON object for scripts. Scopes are granted
to an account here (`account grant-scopes`); a token or key gets only scopes inside its
account's grant, and one taken away stops applying to the tokens and keys that carry it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from authbus_authz.admin.connection import Operator, expect, operate, run, show
from authbus_authz.admin.limits import ask_owners, describe, subject_of
from authbus_shared.authz_client import Secret
from authbus_shared.contracts.commands import (
    AccountInfo,
    AccountRef,
    AccountScopes,
    GetAccount,
    GrantScopes,
    KeyList,
    ListKeys,
    ListTokens,
    NewKey,
    NewToken,
    RevokeKey,
    RevokeToken,
    RotateKey,
    SetAccountDisabled,
    TokenList,
)
from authbus_shared.contracts.events import (
    AccountChanged,
    AccountCreated,
    KeyRevoked,
    KeyRotated,
    TokenRevoked,
)
from authbus_shared.contracts.ratelimit import InspectSubject, KeyState, ResetSubject

app = typer.Typer(help="authbus operators' tool: accounts, tokens, keys.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (JWT).", no_args_is_help=True)
key_app = typer.Typer(help="Legacy API keys (deprecated: prefer tokens).", no_args_is_help=True)
limits_app = typer.Typer(
    help="Rate limits of an account or a client address.", no_args_is_help=True
)
app.add_typer(account_app, name="account")
app.add_typer(token_app, name="token")
app.add_typer(key_app, name="key")
app.add_typer(limits_app, name="limits")

Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (else from env).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]
Name = Annotated[str, typer.Option(help="A name to recognise it by.")]
Scope = Annotated[list[str] | None, typer.Option(help="A scope; repeat for more.")]
ExpiresIn = Annotated[int | None, typer.Option(help="Lifetime in seconds (default: no expiry).")]
Scopes = Annotated[list[str], typer.Argument(help="One or more scopes.", show_default=False)]
Who = Annotated[
    str, typer.Argument(help="An account's email, a client IP address, acct:<id> or addr:<ip>.")
]


# accounts -----------------------------------------------------------------------------------
@account_app.command("create")
def account_create(
    email: str,
    locale: Annotated[str | None, typer.Option(help="Default locale (e.g. fr).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Create an account with a password (8 to 1024 characters; prompted, or from stdin)."""
    password = _read_password(password_stdin)
    reply = expect(
        run(bootstrap, lambda c: c.create_account(email, password, locale)), AccountCreated
    )
    show(
        as_json,
        reply.account.model_dump(),
        f"created account {reply.account.email} (id {reply.account.id})",
    )


def _read_password(from_stdin: bool) -> str:
    """The first line of stdin when asked to, or when stdin is not a terminal (a pipe: no
    prompt, no echo warning); else a hidden prompt, twice."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return str(
        typer.prompt("Password (8 to 1024 characters)", hide_input=True, confirmation_prompt=True)
    )


def _set_disabled(email: str, disabled: bool, bootstrap: str | None, as_json: bool) -> None:
    command = SetAccountDisabled(account=AccountRef(email=email), disabled=disabled)
    reply = expect(run(bootstrap, lambda c: c.ask(command, email)), AccountChanged)
    show(as_json, reply.model_dump(mode="json"), f"account {email}: {reply.change}")


@account_app.command("disable")
def account_disable(email: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Disable an account: every one of its credentials is refused until it is enabled."""
    _set_disabled(email, True, bootstrap, as_json)


@account_app.command("enable")
def account_enable(email: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Enable a disabled account again."""
    _set_disabled(email, False, bootstrap, as_json)


def _change_grant(order: GrantScopes, email: str, bootstrap: str | None, as_json: bool) -> None:
    reply = expect(run(bootstrap, lambda c: c.ask(order, _key(email))), AccountScopes)
    granted = " ".join(reply.scopes) or "(none)"
    show(as_json, reply.model_dump(mode="json"), f"account {email}: scopes {granted}")


@account_app.command("grant-scopes")
def account_grant_scopes(
    email: str, scopes: Scopes, bootstrap: Bootstrap = None, as_json: AsJson = False
) -> None:
    """Add scopes to an account's grant: its tokens and keys may then be made with them."""
    _change_grant(
        GrantScopes(account=AccountRef(email=email), add=tuple(scopes)), email, bootstrap, as_json
    )


@account_app.command("revoke-scopes")
def account_revoke_scopes(
    email: str, scopes: Scopes, bootstrap: Bootstrap = None, as_json: AsJson = False
) -> None:
    """Take scopes out of an account's grant: its tokens and keys stop carrying them.

    Every api instance drops the account's cached verdicts (within its cache bound)."""
    order = GrantScopes(account=AccountRef(email=email), remove=tuple(scopes))
    _change_grant(order, email, bootstrap, as_json)


@account_app.command("show")
def account_show(email: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """An account: id, email, locale, login 2FA, disabled, and its granted scopes."""
    command = GetAccount(account=AccountRef(email=email))
    info = expect(run(bootstrap, lambda c: c.ask(command, _key(email))), AccountInfo)
    text = "\n".join(
        [
            f"id        {info.account.id}",
            f"email     {info.account.email}",
            f"locale    {info.account.locale or '-'}",
            f"2FA       {'on' if info.totp_enabled else 'off'}",
            f"disabled  {'yes' if info.disabled else 'no'}",
            f"scopes    {' '.join(info.scopes) or '(none)'}",
        ]
    )
    show(as_json, info.model_dump(mode="json"), text)


def _key(email: str) -> str:
    """The commands' partition key for an account named by email."""
    return email.strip().lower()


# tokens -------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    email: str,
    name: Name,
    scope: Scope = None,
    expires_in: ExpiresIn = None,
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Issue an API token for an account (no password asked); printed once."""
    secret = expect(
        run(
            bootstrap,
            lambda c: c.issue_token(
                email, name=name, scopes=tuple(scope or ()), expires_in_s=expires_in
            ),
        ),
        Secret,
    )
    reply = expect(secret.reply, NewToken)
    show(as_json, reply.token.model_dump(mode="json") | {"token": secret.value}, secret.value)
    _say_id(as_json, "token", reply.token.token_id)


@token_app.command("list")
def token_list(email: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """An account's tokens (never the tokens themselves: id, name, hint, dates)."""
    reply = expect(
        run(bootstrap, lambda c: c.ask(ListTokens(account=AccountRef(email=email)), email)),
        TokenList,
    )
    rows = [
        f"{t.token_id}  {t.name:<20} …{t.hint}  created {t.created_at:%Y-%m-%d}"
        f"  last used {t.last_used_at or '-'}  {'REVOKED' if t.revoked_at else ''}"
        for t in reply.tokens
    ]
    show(as_json, reply.model_dump(mode="json"), "\n".join(rows) or "no tokens")


@token_app.command("revoke")
def token_revoke(token_id: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Revoke a token by its id (the `jti`, shown when it was created)."""
    reply = expect(
        run(bootstrap, lambda c: c.ask(RevokeToken(token_id=token_id), token_id)), TokenRevoked
    )
    show(as_json, reply.model_dump(mode="json"), f"revoked token {token_id}")


# legacy keys --------------------------------------------------------------------------------
@key_app.command("create")
def key_create(
    email: str,
    name: Name,
    scope: Scope = None,
    expires_in: ExpiresIn = None,
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Create a legacy API key (use as `EMAIL/key:KEY`); printed once."""
    account = AccountRef(email=email)
    secret = expect(
        run(
            bootstrap,
            lambda c: c.create_key(
                account, name=name, scopes=tuple(scope or ()), expires_in_s=expires_in
            ),
        ),
        Secret,
    )
    reply = expect(secret.reply, NewKey)
    show(as_json, reply.key.model_dump(mode="json") | {"key": secret.value}, secret.value)
    _say_id(as_json, "key", reply.key.key_id)


def _say_id(as_json: bool, kind: str, credential_id: str) -> None:
    """The new credential's id, which `revoke` takes, on stderr: stdout stays the secret
    alone, for `TOKEN=$(authbus-admin token create ...)`."""
    if not as_json:
        typer.echo(
            f"{kind} id {credential_id} (authbus-admin {kind} revoke {credential_id})", err=True
        )


@key_app.command("list")
def key_list(email: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """An account's keys (prefix, dates; never the key)."""
    reply = expect(
        run(bootstrap, lambda c: c.ask(ListKeys(account=AccountRef(email=email)), email)), KeyList
    )
    rows = [
        f"{k.key_id}  {k.name:<20} {k.prefix}…  created {k.created_at:%Y-%m-%d}"
        f"  last used {k.last_used_at or '-'}  {'REVOKED' if k.revoked_at else ''}"
        for k in reply.keys
    ]
    show(as_json, reply.model_dump(mode="json"), "\n".join(rows) or "no keys")


@key_app.command("revoke")
def key_revoke(key_id: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Revoke a legacy key by its id."""
    reply = expect(run(bootstrap, lambda c: c.ask(RevokeKey(key_id=key_id), key_id)), KeyRevoked)
    show(as_json, reply.model_dump(mode="json"), f"revoked key {key_id}")


# signing and sealing keys -------------------------------------------------------------------
@app.command("rotate-key")
def rotate_key(
    use: Annotated[
        Literal["sig", "seal"], typer.Argument(help="sig: token signing; seal: credential sealing.")
    ],
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Make a new active key; the previous one stays for the overlap (its tokens stay valid)."""
    reply = expect(run(bootstrap, lambda c: c.ask(RotateKey(use=use), use)), KeyRotated)
    show(
        as_json,
        reply.model_dump(mode="json"),
        f"{use} key rotated: {reply.previous_kid} -> {reply.kid}",
    )


# rate limits --------------------------------------------------------------------------------
async def _limits(op: Operator, who: str, reset: bool) -> tuple[str, list[KeyState]]:
    subject = await subject_of(op.authz, who)
    order = ResetSubject(subject=subject) if reset else InspectSubject(subject=subject)
    return subject, await ask_owners(op, order)


@limits_app.command("show")
def limits_show(who: Who, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Per policy: the current window, what is used of it, and any lockout with its end."""
    subject, keys = operate(bootstrap, lambda op: _limits(op, who, reset=False))
    data = {"subject": subject, "keys": [k.model_dump(mode="json") for k in keys]}
    show(as_json, data, describe(subject, keys))


@limits_app.command("reset")
def limits_reset(who: Who, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Lift the lockouts and forget the windows and strikes: the next request starts afresh."""
    subject, keys = operate(bootstrap, lambda op: _limits(op, who, reset=True))
    data = {"subject": subject, "reset": [k.model_dump(mode="json") for k in keys]}
    text = f"{subject}: reset {len(keys)} key(s)" + "".join(f"\n  {k.key}" for k in keys)
    show(as_json, data, text)
