"""What the fault suite's load is made of, and what it checks was kept afterwards.

Credentials, made over HTTP before the fault (`prepare`):
- `cached`: tokens used on every api instance before the fault, so each verdict cache holds
  them; their accounts also revoke the victims and log in for new tokens;
- `fresh`: tokens no api instance has seen; each (token, instance) pair is used once, so every
  "uncached" request makes its instance ask authz (a cold verification); a pair answered 503
  is used again later (a 503 caches nothing: the pair is still cold there);
- `victims`: tokens cached everywhere, each revoked once during the load by its account's
  cached token (`DELETE /v0/tokens/{id}`).

Kinds of request: `cached` and `uncached` (`GET /v0/me`), `create` (`POST /v0/tokens`: a
login) and `revoke`. Afterwards (`lost`): every token answered 201 works on every instance and
every revocation answered 204 holds on every instance: nothing acknowledged was lost.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from authbus_dev.fleet import Instance
from tests.e2e.conftest import PASSWORD
from tests.fault.load import Record, Shot, Stream, client_address

ME = "/v0/me"
T = TypeVar("T")


@dataclass(frozen=True)
class Issued:
    email: str
    token_id: str
    secret: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass
class Pool:
    cached: list[Issued]
    fresh: list[Issued]
    victims: list[tuple[Issued, Issued]]  # (the token to revoke, its account's cached token)
    spares: list[tuple[Issued, Issued]]  # the same, for the test's own use (not in the load)
    apis: int
    _fresh_pairs: Iterator[tuple[Issued, int]] = field(init=False)
    _victims: Iterator[tuple[Issued, Issued]] = field(init=False)
    _turns: dict[str, Iterator[int]] = field(default_factory=dict)
    _still_cold: deque[tuple[Issued, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._fresh_pairs = ((t, a) for t in self.fresh for a in range(self.apis))
        self._victims = iter(self.victims)

    def _turn(self, kind: str) -> int:
        """How many `kind` shots were made before this one."""
        return next(self._turns.setdefault(kind, itertools.count()))

    def cached_shot(self) -> Shot:
        i = self._turn("cached")
        token = self.cached[(i // self.apis) % len(self.cached)]
        return Shot("cached", i % self.apis, "GET", ME, token.bearer)

    def uncached_shot(self) -> Shot | None:
        pair = self._still_cold.popleft() if self._still_cold else next(self._fresh_pairs, None)
        if pair is None:
            return None
        token, api = pair

        def done(status: int) -> None:
            if status == 503:
                self._still_cold.append(pair)

        return Shot("uncached", api, "GET", ME, token.bearer, note=token.token_id, done=done)

    def create_shot(self) -> Shot:
        i = self._turn("create")
        email = self.cached[i % len(self.cached)].email
        body = {"email": email, "password": PASSWORD, "name": f"fault-{i}"}
        return Shot("create", i % self.apis, "POST", "/v0/tokens", body=body, keep=True)

    def revoke_shot(self) -> Shot | None:
        pair = next(self._victims, None)
        if pair is None:
            return None
        victim, revoker = pair
        i = self._turn("revoke")
        path = f"/v0/tokens/{victim.token_id}"
        return Shot("revoke", i % self.apis, "DELETE", path, revoker.bearer, note=victim.token_id)

    def streams(
        self, cached: float = 15.0, uncached: float = 2.0, create: float = 0.5, revoke: float = 0.4
    ) -> list[Stream]:
        """The usual mix, in requests a second (~18/s); all but `cached` end when the pool
        runs out (size it in `prepare` for the trial's length)."""
        return [
            Stream("cached", cached, self.cached_shot),
            Stream("uncached", uncached, self.uncached_shot),
            Stream("create", create, self.create_shot),
            Stream("revoke", revoke, self.revoke_shot),
        ]


async def _sign_up(client: httpx.AsyncClient, url: str) -> str:
    email = f"f{uuid.uuid4().hex[:10]}@example.com"
    answer = await client.post(
        f"{url}/v0/accounts",
        json={"email": email, "password": PASSWORD},
        headers={"X-Forwarded-For": client_address()},
    )
    assert answer.status_code == 201, answer.text
    return email


async def _log_in(client: httpx.AsyncClient, url: str, email: str) -> Issued:
    answer = await client.post(
        f"{url}/v0/tokens",
        json={"email": email, "password": PASSWORD, "name": "fault"},
        headers={"X-Forwarded-For": client_address()},
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    return Issued(email, created["id"], created["secret"])


async def _bounded(calls: list[Coroutine[Any, Any, T]], at_once: int = 6) -> list[T]:
    """The calls' results, `at_once` of them running at a time."""
    slots = asyncio.Semaphore(at_once)

    async def one(call: Coroutine[Any, Any, T]) -> T:
        async with slots:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def _prepare(
    apis: list[Instance], cached: int, fresh: int, victims: int, spares: int
) -> Pool:
    urls = [a.url for a in apis]
    async with httpx.AsyncClient(timeout=30) as client:
        owners = await _bounded(
            [_sign_up(client, urls[i % len(urls)]) for i in range(cached + fresh)]
        )
        emails = owners + [owners[i % cached] for i in range(victims + spares)]
        issued = await _bounded(
            [_log_in(client, urls[i % len(urls)], e) for i, e in enumerate(emails)]
        )
        doomed = [(v, issued[i % cached]) for i, v in enumerate(issued[cached + fresh :])]
        pool = Pool(
            cached=issued[:cached],
            fresh=issued[cached : cached + fresh],
            victims=doomed[:victims],
            spares=doomed[victims:],
            apis=len(apis),
        )
        warm = [(t, u) for t in pool.cached + [v for v, _ in doomed] for u in urls]
        answers = await _bounded([client.get(f"{u}{ME}", headers=t.bearer) for t, u in warm], 12)
    assert [a.status_code for a in answers] == [200] * len(warm), "warm-up failed"
    return pool


def prepare(
    apis: list[Instance], *, cached: int = 8, fresh: int = 16, victims: int = 8, spares: int = 0
) -> Pool:
    """Accounts and tokens for one trial (each fresh token in an account of its own, so its
    first request on an instance also needs a rate lease nobody holds yet), the cached ones
    and the victims warmed on every instance."""
    return asyncio.run(_prepare(apis, cached, fresh, victims, spares))


async def _status(client: httpx.AsyncClient, url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client_address()}
    try:
        return (await client.get(f"{url}{ME}", headers=headers)).status_code
    except httpx.HTTPError:
        return 0


async def _settles(
    client: httpx.AsyncClient, url: str, token: str, want: int, within_s: float
) -> int:
    """The status `token` gets at `url`, asked until it is `want` or `within_s` passed."""
    deadline = time.monotonic() + within_s
    status = await _status(client, url, token)
    while status != want and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        status = await _status(client, url, token)
    return status


Check = tuple[str, int, str]  # what, the status it must now give, the token


def _acknowledged(records: list[Record], pool: Pool) -> list[Check]:
    """Each acknowledged change, as the status its token must now give."""
    victims = {v.token_id: v for v, _ in pool.victims}
    found: list[Check] = []
    for r in records:
        if r.kind == "create" and r.status == 201:
            assert r.body is not None
            found.append((f"token created at {r.sent_s:.1f} s", 200, str(r.body["secret"])))
        elif r.kind == "revoke" and r.status == 204:
            found.append((f"revocation sent at {r.sent_s:.1f} s", 401, victims[r.note].secret))
    return found


async def _lost(apis: list[Instance], checks: list[Check], within_s: float) -> list[str]:
    each = [(what, want, token, api) for what, want, token in checks for api in apis]
    async with httpx.AsyncClient(timeout=5) as client:
        got = await _bounded([_settles(client, a.url, t, w, within_s) for _, w, t, a in each], 12)
    return [
        f"{what}, acknowledged: {a.name} now answers {g}, not {w}"
        for (what, w, _, a), g in zip(each, got, strict=True)
        if g != w
    ]


def lost(
    apis: list[Instance],
    records: list[Record],
    pool: Pool,
    also: Iterable[Check] = (),
    within_s: float = 10.0,
) -> list[str]:
    """What was acknowledged and does not hold (empty: nothing lost): a token answered 201
    that does not give 200, a revocation answered 204 that does not give 401, on any
    instance (each asked until `within_s`: the system has just recovered); `also`: the
    test's own acknowledged changes."""
    checks = [*_acknowledged(records, pool), *also]
    return asyncio.run(_lost(apis, checks, within_s))


async def _issue(url: str) -> Issued:
    async with httpx.AsyncClient(timeout=30) as client:
        return await _log_in(client, url, await _sign_up(client, url))


def issue(api: Instance) -> Issued:
    """A token of a new account, made through `api`."""
    return asyncio.run(_issue(api.url))
