"""What the api holds per cached credential (issue #13 item 2), in one run.

    .venv/bin/python -m bench.cache_memory [--counts 0,100000,1000000]

For each count N, a fresh process builds the api's `Gate` as `authbus_api.runner` does (the
real verdict cache, quota and rate limiter; authz and the lease owner are in-memory stand-ins)
and sends N distinct Bearer credentials through it, each of its own account, each once through
`identify` (a cache miss: the verdict is cached) and once through `rate` (the account's slice
of the per-account policy is taken and kept). Then it collects garbage and reads its resident
set size (`VmRSS`). The verdicts look like authz's: a 32-hex account id, an email, one scope,
an expiry and a check time.

Printed per N: RSS in MiB, the growth over N = 0, and bytes per cached credential (rate
state included), split into the verdict cache's share (a second process that only
identifies) and the rate state's; with the largest allocation sites for the biggest N
(tracemalloc, `--trace`).
Target (issue #13): at most 600 bytes per cached credential, at most 150 MiB RSS at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from prometheus_client import CollectorRegistry

from authbus_api.core.quota import Quota
from authbus_api.core.rates import RatePolicy
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_api.gate import Gate
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_shared.authz_client import Verdict
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
)
from bench.hot_path_servers import NoUsage, fresh_trust

ROUTE = "GET /v1/things/{id}"


class ManyAccounts:
    """authz in memory: every `tok-<i>` is valid, for account i."""

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict:
        i = int(credential.secret.removeprefix("tok-"))
        now = utcnow()
        return CredentialVerified(
            outcome=Outcome.VALID,
            account=AccountView(id=f"{i:032x}", email=f"user{i}@example.com", locale=None),
            scopes=("read",),
            method=AuthMethod.TOKEN,
            credential_id=f"tk_{i:022d}",
            valid_until=now + timedelta(days=30),
            checked_at=now,
        )


class StatelessOwner:
    """The lease owner as seen from the api, keeping nothing here (its book lives in the
    ratelimit process, not in the api's memory): every ask gets what it wants of a 60 s
    window starting now, as the owner starts a key's window at its first ask (so no two
    keys' slices share their times)."""

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        start = utcnow()
        return LeaseGranted(
            key=ask.key,
            granted=ask.want,
            window_start=start,
            window_end=start + timedelta(seconds=60),
            remaining=ask.policy.limit - ask.want,
        )

    async def release(self, release: ReleaseLease) -> None:
        return None


def gate(max_entries: int) -> Gate:
    lease = LeasePolicy(name="global", limit=100_000_000, window_s=60, lockout_s=60)
    return Gate(
        cache=VerdictCache(
            max_entries=max_entries, ttl=timedelta(seconds=600), negative_ttl=timedelta(seconds=5)
        ),
        digest=CredentialDigest(),
        authz=ManyAccounts(),
        limiter=RateLimiter(Quota("bench"), StatelessOwner()),
        policies=(RatePolicy(lease, scope="account"),),
        usage=NoUsage(),
        metrics=ApiMetrics(CollectorRegistry()),
        trust=fresh_trust(),
    )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Filled(TypedDict):
    count: int
    rss: int  # bytes
    cached: int
    top: list[str]  # the largest allocation sites (`--trace`)


async def fill(count: int, trace: bool, rate: bool = True) -> Filled:
    held = gate(max(count, 1))
    if trace:
        tracemalloc.start()
    for i in range(count):
        who = await held.identify(f"Bearer tok-{i}", "127.0.0.1")
        if not rate:
            continue
        rated = await held.rate(who, ROUTE)  # type: ignore[arg-type]
        if not isinstance(rated, dict):
            raise RuntimeError(f"credential {i}: {who!r} {rated!r}")
    gc.collect()
    top: list[str] = []
    if trace:
        stats = tracemalloc.take_snapshot().statistics("lineno")[:20]
        top = [f"{s.size / max(count, 1):7.0f} B  {s.traceback}" for s in stats]
    return {"count": count, "rss": rss_bytes(), "cached": len(held.cache), "top": top}


def child(count: int, trace: bool, rate: bool) -> None:
    print(json.dumps(asyncio.run(fill(count, trace, rate))))


def measured(count: int, trace: bool, rate: bool = True) -> Filled:
    """`fill` in a fresh process."""
    command = [sys.executable, "-m", "bench.cache_memory", "--child", str(count)]
    command += ["--trace"] if trace and count else []
    command += [] if rate else ["--no-rate"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    result: Filled = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="0,100000,1000000")
    parser.add_argument("--trace", action="store_true", help="allocation sites (slower)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-rate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.trace, not args.no_rate)
        return
    counts = [int(c) for c in args.counts.split(",")]
    rows = [measured(count, args.trace) for count in counts]
    alone = [measured(count, False, rate=False) for count in counts]  # the verdicts alone
    base = rows[0]["rss"] if rows[0]["count"] == 0 else 0
    header = ("cached", "RSS MiB", "growth MiB", "B/credential", "of it: verdict", "rate state")
    print(f"{header[0]:>10}" + "".join(f"{h:>15}" for h in header[1:]))
    for row, verdicts in zip(rows, alone, strict=True):
        count, rss = row["count"], row["rss"]
        per = (rss - base) / count if count else 0
        cache_only = (verdicts["rss"] - base) / count if count else 0
        figures = (rss / 2**20, (rss - base) / 2**20, per, cache_only, per - cache_only)
        print(f"{row['cached']:>10,}" + "".join(f"{f:>15,.1f}" for f in figures))
    if rows[-1]["top"]:
        print(f"\nlargest allocation sites at {rows[-1]['count']:,} (bytes per credential):")
        print("\n".join(rows[-1]["top"]))


if __name__ == "__main__":
    main()
