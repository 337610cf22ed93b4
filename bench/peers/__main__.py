"""authbus side by side with its peers (issue #13 item 1), in one run.

    .venv/bin/python -m bench.peers [--seconds 10] [--concurrency 32] [--cores 1] [--keep]
        [--uncached-seconds 5] [--uncached-tokens N]

Builds the peers and vegeta if missing (`bench.peers.build`) and hey; starts Kafka and
SecantusDB on free loopback ports, authz and ratelimit (one each, unpinned: idle on a cache
hit), an account and an ES256 token made with `authbus-admin`, the uncached row's fresh tokens
(`bench.peers.tokens`), and the api's JWKS saved to a file. Then per row, its server alone on
the first `--cores` CPUs (`taskset`), the load generator on the others, the same connections
(hey's `-c`, vegeta's workers) and duration, after a 2 s warm-up thrown away:

- authbus forward-auth (cached): `GET /v0/forward-auth` (nginx dialect) for `GET
  /v1/things/42`, a declared route needing the scope `read` the token grants; the verdict in
  the cache, a rate check per request (100,000,000 per hour per account: nothing refused).
- authbus forward-auth (uncached): the same, the api as usual, loaded by vegeta with a token
  never seen before per request (the first request of each token): every lookup misses and
  asks authz over Kafka, one question per request (no single flight to share). Its load is
  `--uncached-seconds` (default: --seconds, at most 5: minting is slow, ~80 tokens/s on 2
  busy cores); `--uncached-tokens` (default: 1,000 per second of its loads and warm-ups, both
  orders) are minted first, and a load that uses up its share fails rather than reuse one.
  Checked: cache hits 0, authz verifications per answer ~1. authz and Kafka are not pinned.
- Oathkeeper /decisions (jwt): `GET /decisions/v1/things/42`, a rule with the jwt
  authenticator (the JWKS file, ES256, the token's issuer and audience, the scope), allow, noop.
- gubernator GetRateLimits: `POST /v1/GetRateLimits` for one key, one hit, a large limit.

Each row is checked first with httpx (the token 200, the token with a tampered signature
401; gubernator under the limit), and every loaded answer must be 200: else the row FAILED and
the run exits 1. The rows run in order, then in reverse. Printed: req/s, p50, p99, the peak
RSS of the server under test (VmHWM; the api process alone for authbus), what the servers
counted during the load, and authbus cached's req/s and p99 over each other row's.
Everything started is stopped by its pid, on success, error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from authbus_dev.infra import InfraError
from bench.api_hot_path import HEY_MODULE, REPO, ensure_hey
from bench.harness import local_infrastructure, running
from bench.peers import build
from bench.verify_over_kafka.console import cores, cpu_model, load_average, progress
from bench.verify_over_kafka.interrupts import catch_interrupts

from .authbus import Authbus
from .load import peak_rss_mib, run_hey
from .procs import BenchError
from .report import Result, ratios, table
from .rows import CACHED, ROWS, Run, Serve
from .tokens import TokenPool, tokens_needed

WARM_UP_S = 2.0
# what fails one row (a server that would not start or answered wrong, hey that failed), not
# the run: the other rows still run, and the run exits 1
ROW_FAILURES = (BenchError, InfraError, httpx.HTTPError, subprocess.SubprocessError, ValueError)
ORDERS = ("forward", "reverse")
UNCACHED_MAX_S = 5.0  # the uncached row's default load, at most (its tokens take long to mint)
UNCACHED_RATE_CEILING = 1_000.0  # answers/s the default count of fresh tokens allows for


@dataclass(frozen=True)
class Options:
    seconds: float
    concurrency: int
    cores: int
    keep: bool
    uncached_seconds: float = UNCACHED_MAX_S
    uncached_tokens: int = 0

    @property
    def uncached_planned_s(self) -> float:
        """Every load of the uncached row, warm-ups too, in both orders."""
        return len(ORDERS) * (WARM_UP_S + self.uncached_seconds)


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="each load (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="hey's connections")
    parser.add_argument("--cores", type=int, default=1, help="CPUs each server is pinned to")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    parser.add_argument(
        "--uncached-seconds",
        type=float,
        help=f"the uncached row's load (default: --seconds, at most {UNCACHED_MAX_S:g})",
    )
    parser.add_argument(
        "--uncached-tokens",
        type=int,
        help=f"fresh tokens to mint for it (default: {UNCACHED_RATE_CEILING:,.0f} per second "
        "of its loads and warm-ups)",
    )
    opts = parser.parse_args(argv)
    if opts.cores < 1 or opts.concurrency < 1 or opts.seconds <= 0:
        parser.error("--cores and --concurrency must be >= 1, --seconds > 0")
    uncached_s = opts.uncached_seconds or min(opts.seconds, UNCACHED_MAX_S)
    if uncached_s <= 0 or (opts.uncached_tokens is not None and opts.uncached_tokens < 1):
        parser.error("--uncached-seconds must be > 0, --uncached-tokens >= 1")
    made = Options(opts.seconds, opts.concurrency, opts.cores, opts.keep, uncached_s)
    tokens = opts.uncached_tokens or tokens_needed(made.uncached_planned_s, UNCACHED_RATE_CEILING)
    return dataclasses.replace(made, uncached_tokens=tokens)


def split_cpus(allowed: Iterable[int], count: int) -> tuple[str, str]:
    """The server's CPUs (the first `count`) and the load generator's (the rest; the same
    ones when none are left)."""
    ordered = sorted(allowed)
    server, client = ordered[:count], ordered[count:] or ordered[:count]
    return ",".join(map(str, server)), ",".join(map(str, client))


def header(argv: Sequence[str], server: str, client: str) -> str:
    git = shutil.which("git")
    described = subprocess.run(
        [git or "/usr/bin/git", "describe", "--always", "--dirty"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    commit = described.stdout.strip() or "(no git)"
    oathkeeper = build.OATHKEEPER_MODULE.split("@")[1]
    gubernator = build.GUBERNATOR_MODULE.split("@")[1]
    return "\n".join(
        [
            f"command: .venv/bin/python -m bench.peers {shlex.join(argv)}".rstrip(),
            f"machine: {cores()} cores ({cpu_model()}), load average {load_average()}",
            f"pinning: each server on CPU {server}, hey (vegeta) on CPU {client}",
            f"versions: authbus {commit}, Python {sys.version.split()[0]}, Ory Oathkeeper "
            f"{oathkeeper}, gubernator {gubernator}, hey {HEY_MODULE.split('@')[1]}, vegeta "
            f"{build.VEGETA_MODULE.split('@')[1]}",
        ]
    )


def measure(run: Run, name: str, serve: Serve, opts: Options, order: str) -> Result:
    """One row: its server up and checked, a warm-up thrown away, the load, its counts."""
    try:
        with serve(run) as serving:
            load = functools.partial(
                serving.load or functools.partial(run_hey, run.hey, serving.target),
                concurrency=opts.concurrency,
                cpus=run.client_cpus,
            )
            load(seconds=WARM_UP_S)
            before = serving.counts()
            loaded = load(seconds=serving.seconds or opts.seconds)
            after = serving.counts()
            rss = peak_rss_mib(serving.pids)
    except ROW_FAILURES as exc:
        progress(f"ROW FAILED: {name} ({order}): {exc}")
        return Result(name, order, problems=[str(exc)])
    counted = {key: after[key] - before.get(key, 0.0) for key in after}
    notes, problems = serving.judge(counted, loaded)
    for problem in problems:
        progress(f"ROW FAILED: {name} ({order}): {problem}")
    return Result(name, order, loaded, rss, notes, problems)


def jwks_file(authbus: Authbus, cpus: str, folder: Path) -> Path:
    """The api's `/.well-known/jwks.json`, saved for Oathkeeper's `file://` JWKS URL."""
    with authbus.api(cpus, {}) as (instance, _):
        answer = httpx.get(f"{instance.url}/.well-known/jwks.json", timeout=10)
    answer.raise_for_status()
    path = folder / "jwks.json"
    path.write_text(json.dumps(answer.json()))
    return path


def fresh_tokens(authbus: Authbus, email: str, opts: Options) -> TokenPool:
    progress(f"{opts.uncached_tokens:,} fresh tokens for the uncached row (IssueToken)")
    minted = authbus.fresh_tokens(email, opts.uncached_tokens)
    progress(f"minted {len(minted.tokens):,} in {minted.seconds:.1f} s ({minted.rate:.0f}/s)")
    return TokenPool(minted.tokens, opts.uncached_planned_s, opts.uncached_seconds)


def run_rows(opts: Options, hey: Path, vegeta: Path) -> list[Result]:
    server, client = split_cpus(os.sched_getaffinity(0), opts.cores)
    results: list[Result] = []
    with local_infrastructure("authbus-peers-", keep=opts.keep) as infra:
        authbus = Authbus.prepare(infra)
        backends = authbus.backends()
        with running(backends, "authz and ratelimit"):
            progress("an account and a token (authbus-admin), the JWKS")
            email = authbus.new_account()
            token = authbus.new_token(email)
            jwks = jwks_file(authbus, server, infra.run_dir)
            fresh = fresh_tokens(authbus, email, opts)
            run = Run(
                hey, vegeta, server, client, infra.run_dir, authbus, backends, token, jwks, fresh
            )
            for order in ORDERS:
                names = list(ROWS) if order == "forward" else list(reversed(ROWS))
                for name in names:
                    progress(f"{name} ({order})")
                    results.append(measure(run, name, ROWS[name], opts, order))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    catch_interrupts()
    server, client = split_cpus(os.sched_getaffinity(0), opts.cores)
    print(header(args, server, client), flush=True)
    print(
        f"load: hey, {opts.concurrency} connections, {opts.seconds:g} s per row after a "
        f"{WARM_UP_S:g} s warm-up; uncached: vegeta, {opts.concurrency} workers, "
        f"{opts.uncached_seconds:g} s, {opts.uncached_tokens:,} fresh tokens; rows in order, "
        "then in reverse\n",
        flush=True,
    )
    try:
        build.build_gubernator()
        build.build_oathkeeper()
        vegeta = build.build_vegeta()
        results = run_rows(opts, ensure_hey(), vegeta)
    except KeyboardInterrupt:
        progress("interrupted; everything started was stopped")
        return 130
    ordered = sorted(results, key=lambda r: (list(ROWS).index(r.row), ORDERS.index(r.order)))
    print(table(ordered))
    print()
    print(ratios(ordered, CACHED, ORDERS))
    failed = [f"{r.row} ({r.order})" for r in ordered if r.failed]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
