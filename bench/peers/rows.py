"""The rows of the comparison. Each row starts its server pinned to the server cores, checks
its answers with httpx (a good token 200, a tampered one 401; a wrong answer fails the row),
gives the bench what to load and what to count, and stops the server again."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from authbus_dev.fleet import Fleet
from authbus_dev.ports import free_port
from bench.peers.build import GUBERNATOR, OATHKEEPER

from . import configs
from .authbus import Authbus, counters
from .load import Loaded, Target
from .procs import BenchError, pinned, wait_ready
from .tokens import TokenPool
from .vegeta import run_vegeta

CACHED = "authbus forward-auth (cached)"
UNCACHED = "authbus forward-auth (uncached)"
OATHKEEPER_ROW = "Oathkeeper /decisions (jwt)"
GUBERNATOR_ROW = "gubernator GetRateLimits"
# Below this many authz verifications per answer, answers came without asking authz.
MIN_VERIFICATIONS_PER_ANSWER = 0.95

Counts = Mapping[str, float]
Judge = Callable[[Counts, Loaded], tuple[list[str], list[str]]]  # -> notes, problems


@dataclass(frozen=True)
class Run:
    """What every row shares."""

    hey: Path
    vegeta: Path
    server_cpus: str
    client_cpus: str
    folder: Path
    authbus: Authbus
    backends: Fleet
    token: str
    jwks: Path
    fresh: TokenPool  # tokens never used, for the uncached row


class Load(Protocol):
    """A row's own load generator (else hey sends `Serving.target` again and again)."""

    def __call__(self, *, seconds: float, concurrency: int, cpus: str) -> Loaded: ...


def no_counts() -> Counts:
    return {}


def no_judgement(counted: Counts, loaded: Loaded) -> tuple[list[str], list[str]]:
    return [], []


@dataclass(frozen=True)
class Serving:
    """A row's server, up and checked: what to load (and how, and how long, when not as
    every row), whose memory to read, what to count before and after the load, and what
    those counts say."""

    target: Target
    pids: list[int]
    counts: Callable[[], Counts] = no_counts
    judge: Judge = no_judgement
    load: Load | None = None  # None: hey
    seconds: float | None = None  # None: the run's --seconds


Serve = Callable[[Run], contextlib.AbstractContextManager[Serving]]


def expect(row: str, what: str, answer: httpx.Response, status: int) -> None:
    if answer.status_code != status:
        raise BenchError(
            f"{row}: {what} got {answer.status_code}, not {status}: {answer.text[:300]}"
        )


def check_tokens(row: str, url: str, headers: Mapping[str, str], token: str) -> None:
    """The good token passes, the same token with its signature tampered does not."""
    good = httpx.get(url, headers=headers, timeout=10)
    expect(row, "the token", good, 200)
    bad = dict(headers) | {"Authorization": f"Bearer {configs.tampered(token)}"}
    expect(row, "a tampered token", httpx.get(url, headers=bad, timeout=10), 401)


def per_answer(counted: Counts, key: str, loaded: Loaded) -> str:
    return f"{counted.get(key, 0) / max(loaded.answered, 1):.2f}"


def judge_cached(counted: Counts, loaded: Loaded) -> tuple[list[str], list[str]]:
    notes = [
        f"cache misses {counted['cache misses']:.0f}",
        f"rate checks/answer {per_answer(counted, 'rate checks', loaded)}",
    ]
    return notes, []


def judge_uncached(counted: Counts, loaded: Loaded) -> tuple[list[str], list[str]]:
    notes = [
        f"cache hits {counted['cache hits']:.0f}",
        f"misses/answer {per_answer(counted, 'cache misses', loaded)}",
        f"authz verifications/answer {per_answer(counted, 'authz verifications', loaded)}",
        f"rate checks/answer {per_answer(counted, 'rate checks', loaded)}",
    ]
    problems = ["the verdict cache answered"] if counted["cache hits"] else []
    verifications = counted["authz verifications"] / max(loaded.answered, 1)
    if verifications < MIN_VERIFICATIONS_PER_ANSWER:
        problems.append(f"only {verifications:.2f} authz verifications per answer")
    return notes, problems


@contextlib.contextmanager
def serve_cached(run: Run) -> Iterator[Serving]:
    """The one token again and again: its verdict in the api's cache after the first."""
    with run.authbus.api(run.server_cpus, {}) as (instance, pid):
        url = f"{instance.url}/v0/forward-auth"
        headers = configs.forward_auth_headers(run.token)
        check_tokens(CACHED, url, headers, run.token)
        yield Serving(
            Target(url, headers=headers),
            [pid],
            counts=lambda: counters(instance, run.backends),
            judge=judge_cached,
        )


@contextlib.contextmanager
def serve_uncached(run: Run) -> Iterator[Serving]:
    """A token never seen before per request (vegeta): each a verdict-cache miss that asks
    authz; the api with its usual settings."""
    with run.authbus.api(run.server_cpus, {}) as (instance, pid):
        url = f"{instance.url}/v0/forward-auth"
        check_tokens(UNCACHED, url, configs.forward_auth_headers(run.token), run.token)
        folder = run.folder / "vegeta"

        def load(*, seconds: float, concurrency: int, cpus: str) -> Loaded:
            tokens = run.fresh.take(seconds)
            return run_vegeta(
                run.vegeta,
                url,
                tokens,
                configs.forward_auth_headers,
                folder,
                seconds=seconds,
                concurrency=concurrency,
                cpus=cpus,
            )

        yield Serving(
            Target(url),
            [pid],
            counts=lambda: counters(instance, run.backends),
            judge=judge_uncached,
            load=load,
            seconds=run.fresh.load_s,
        )


@contextlib.contextmanager
def serve_oathkeeper(run: Run) -> Iterator[Serving]:
    folder = run.folder / "oathkeeper"
    folder.mkdir(exist_ok=True)
    ports = {"api": free_port(), "proxy": free_port(), "prometheus": free_port()}
    rules = folder / "rules.json"
    rules.write_text(json.dumps(configs.oathkeeper_rules(ports["api"]), indent=2))
    config = folder / "config.yaml"  # JSON is YAML
    rendered = configs.oathkeeper_config(
        ports=ports,
        rules_url=rules.as_uri(),
        jwks_url=run.jwks.as_uri(),
        token_claims=configs.claims(run.token),
    )
    config.write_text(json.dumps(rendered, indent=2))
    log = folder / "oathkeeper.log"
    argv = [str(OATHKEEPER), "serve", "--config", str(config), "--sqa-opt-out"]
    with pinned(argv, run.server_cpus, log) as proc:
        base = f"http://127.0.0.1:{ports['api']}"
        wait_ready(proc, log, lambda: httpx.get(f"{base}/health/ready").status_code == 200)
        url = f"{base}/decisions{configs.RESOURCE}"
        headers = {"Authorization": f"Bearer {run.token}"}
        check_tokens(OATHKEEPER_ROW, url, headers, run.token)
        yield Serving(Target(url, headers=headers), [proc.pid])


def gubernator_used(url: str, key: str) -> Counts:
    """How many hits the key has had in its window (a request of 0 hits only reads)."""
    asked = httpx.post(url, json=configs.gubernator_body(key, hits=0), timeout=10)
    remaining = int(asked.json()["responses"][0]["remaining"])
    return {"hits": configs.LIMIT - remaining}


def check_gubernator(url: str, key: str) -> None:
    answer = httpx.post(url, json=configs.gubernator_body(key), timeout=10)
    expect(GUBERNATOR_ROW, "GetRateLimits", answer, 200)
    (reply,) = answer.json()["responses"]
    if reply.get("status") != "UNDER_LIMIT" or reply.get("error"):
        raise BenchError(f"{GUBERNATOR_ROW}: GetRateLimits answered {reply}")


def judge_gubernator(counted: Counts, loaded: Loaded) -> tuple[list[str], list[str]]:
    return [f"hits counted/answer {per_answer(counted, 'hits', loaded)}"], []


@contextlib.contextmanager
def serve_gubernator(run: Run) -> Iterator[Serving]:
    folder = run.folder / "gubernator"
    folder.mkdir(exist_ok=True)
    http = free_port()
    env = os.environ | configs.gubernator_env(http=http, grpc=free_port(), gossip=free_port())
    key = f"acct:{uuid.uuid4().hex}"  # a fresh window per run of the row
    body = folder / "body.json"
    body.write_text(json.dumps(configs.gubernator_body(key)))
    log = folder / "gubernator.log"
    with pinned([str(GUBERNATOR)], run.server_cpus, log, env) as proc:
        base = f"http://127.0.0.1:{http}"
        wait_ready(
            proc, log, lambda: httpx.get(f"{base}/v1/HealthCheck").json().get("peer_count") == 1
        )
        url = f"{base}/v1/GetRateLimits"
        check_gubernator(url, key)
        yield Serving(
            Target(url, method="POST", body=body),
            [proc.pid],
            counts=lambda: gubernator_used(url, key),
            judge=judge_gubernator,
        )


ROWS: dict[str, Serve] = {
    CACHED: serve_cached,
    UNCACHED: serve_uncached,
    OATHKEEPER_ROW: serve_oathkeeper,
    GUBERNATOR_ROW: serve_gubernator,
}
