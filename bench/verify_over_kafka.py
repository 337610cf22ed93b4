"""Cold credential verification through Kafka, as the api sees it on a verdict-cache miss.

    .venv/bin/python bench/verify_over_kafka.py [--seconds 10] [--concurrency 8]
        [--authz 1,2] [--kinds bearer,password,key] [--warmup 1] [--broker-warmup 10]
        [--linger-ms N] [--keep]

What is measured: the round trip of `AuthzClient.verify(credential, partition_key=...)`, the
call the api makes on a miss. The credential is sealed to authz's key and produced to
`auth.verify.v1`; an authz instance (consumer group) opens it, checks it against MongoDB
(bearer: ES256 signature, then token and account reads; password: account read and argon2id
with the default parameters; key: whatever authz does for legacy keys) and replies on the
asker's partition of `authbus.replies.v1`. Every reply is checked: anything but a `valid`
verdict, or no reply within 10 s, is counted under `bad`, never dropped.

How: the script starts everything itself with the project's tooling. `authbus_dev.infra`
starts the real Kafka broker and SecantusDB on free loopback ports in a temp folder, and
`authbus_dev.fleet` starts only authz instances, with a fresh topic prefix and database per
fleet. All of it is stopped at the end, on an error and on Ctrl-C. For each authz count and
credential kind the script measures at concurrency 1 (sequential) and at `--concurrency`
(closed loop: each of N workers sends its next request when its previous reply arrives), for
`--seconds` each, after a warm-up that is thrown away. Each request is timed with
`time.perf_counter()` around the call.

The freshly started broker is warmed up first: `--broker-warmup` seconds of Kafka hops at
concurrency 8 through a consumer group (produce, fetch, offset commits), thrown away. Its JVM
compiles its hot paths in the first minute, and until it has, a hop costs several times the CPU
and latency it does later. Then the baselines run, on the same broker and database, with no
authz running. Each Kafka hop publishes with the project's `Publisher` (acks=all, idempotence,
the run's linger) and waits until the message has been read back:
- `base:kafka`: read as the asker reads its replies, by a consumer assigned to one partition
  from its end, with the reply reader's settings. This is the reply leg of a verification.
- `base:kafka0`: the same hop with `linger_ms=0`, so you can see what the producer linger
  costs. It is shown only when the run's linger is not 0.
- `base:group`: read as authz reads its requests, by the project's `GroupConsumer` over as many
  partitions as `auth.verify.v1` (it handles a fetched batch, then commits its offsets before
  it takes the next). This is the request leg of a verification, without authz's work.
- `base:mongo`: one `find_one` by `_id` through motor. authz does two per bearer check.

How to read the table:
- `p50/p99/max ms`: per-request round trips, as nearest-rank percentiles of the sorted
  samples. `p99*` marks rows with fewer than 100 samples; there p99 is the max.
- `verif/s`: completed requests divided by the wall time of the measured stretch.
- `authz ms`: authz's own metric `authz_verify_duration_seconds`, the mean time it took to
  check one credential in that stretch: opening the sealed box, store reads, and the signature
  or argon2 (including the wait for an argon2 thread). A verification costs roughly
  `base:group` + `authz ms` + `base:kafka`. What is left over is time in authz outside the
  check (decoding, replying, waiting for its event loop) and on this asker.
- `split`: the share of checks each authz instance answered.
- `cpu ms per request`: the CPU time each process used in the stretch, divided by the
  requests completed: the broker, SecantusDB, all authz instances together, and this script
  (the asker). `other` is the CPU that none of those used (busy time from /proc/stat minus
  theirs). It should be near 0; anything more means something else on the machine was
  competing for it, and the latencies are not clean.

On a closed loop at concurrency N, p50 is close to N / (verif/s) once the machine is
saturated (Little's law). At that point the latency is queueing for CPU, and `cpu ms per
request` says which process to make cheaper. Password checks are bounded by argon2id on
purpose: about 20-40 ms of CPU each, at most 2 at once per instance. Expect tens per second.

`--linger-ms` sets the producer linger on both sides: this asker, and authz through its
setting `AUTHBUS_AUTHZ_KAFKA__LINGER_MS`. By default the project's default is left alone.

Credential kinds are entries of `KINDS`: a function that prepares N credentials of the kind
for a fresh account. A kind whose entry says it cannot run on this tree (`key`, while
`AuthzClient` has no `create_key`) is skipped with a note. A default run takes about 4 minutes
on 2 cores. Progress goes to stderr, the table to stdout, the services' logs to the run folder
(kept with `--keep` or after a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import inspect
import itertools
import math
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from authbus_authz.admin import AdminSettings, connected
from authbus_dev import infra
from authbus_dev.fleet import Fleet, Ports, Service
from authbus_shared import logs
from authbus_shared.authz_client import AuthzClient
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import (
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.envelope import (
    Envelope,
    MessageDecodeError,
    decode,
    new_id,
    utcnow,
    wrap,
)
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.admin import ensure_topics
from authbus_shared.kafka.group import GroupConsumer
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcTimeout
from authbus_shared.settings import KafkaSettings, LogSettings

T = TypeVar("T")

TARGET_P99_MS = 10.0
TARGET_KINDS = ("bearer", "key")
REPLY_TIMEOUT_S = 10.0
VERIFY_METRIC = "authz_verify_duration_seconds"
CPU_GROUPS = ("kafka", "mongo", "authz", "bench", "other")


class BenchError(RuntimeError):
    """The bench could not set something up; the message says what."""


class KindUnavailable(BenchError):
    """A credential kind cannot be measured on this tree (yet)."""


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seconds: float
    concurrency: int
    authz: tuple[int, ...]
    kinds: tuple[str, ...]
    warmup: float
    broker_warmup: float
    linger_ms: int | None  # None: the project's default
    keep: bool

    @property
    def concurrencies(self) -> tuple[int, ...]:
        return (1,) if self.concurrency == 1 else (1, self.concurrency)

    @property
    def credentials(self) -> int:
        """How many credentials each kind prepares (distinct tokens/keys, partition keys)."""
        return max(64, 4 * self.concurrency)

    def kafka(self, bootstrap: str, topic_prefix: str = "") -> KafkaSettings:
        settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
        if self.linger_ms is None:
            return settings
        return settings.model_copy(update={"linger_ms": self.linger_ms})


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in KINDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"kinds among {', '.join(KINDS)}; unknown: {unknown}")
    return names


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row")
    parser.add_argument("--concurrency", type=int, default=8, help="workers at moderate load")
    parser.add_argument("--authz", type=_int_list, default=(1, 2), help="authz counts, e.g. 1,2")
    parser.add_argument(
        "--kinds", type=_name_list, default=tuple(KINDS), help="e.g. bearer,password,key"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded seconds per row")
    parser.add_argument(
        "--broker-warmup", type=float, default=10.0, help="seconds of Kafka hops before all rows"
    )
    parser.add_argument(
        "--linger-ms", type=int, default=None, help="producer linger, both sides (default: as is)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    ns = parser.parse_args(argv)
    if ns.seconds <= 0 or ns.concurrency < 1 or ns.warmup < 0 or ns.broker_warmup < 0:
        parser.error("--seconds > 0, --concurrency >= 1, warm-ups >= 0")
    if ns.linger_ms is not None and not 0 <= ns.linger_ms <= 1000:
        parser.error("--linger-ms between 0 and 1000")
    return Options(
        ns.seconds,
        ns.concurrency,
        ns.authz,
        ns.kinds,
        ns.warmup,
        ns.broker_warmup,
        ns.linger_ms,
        ns.keep,
    )


# --- the closed loop and its statistics ------------------------------------------------------

# One request, number i; True when the answer is the expected one.
Call = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True)
class Sampled:
    latencies: list[float]  # seconds, one per completed request
    bad: int
    elapsed: float  # wall time of the stretch, until the last reply


async def closed_loop(call: Call, *, concurrency: int, seconds: float) -> Sampled:
    """`concurrency` workers, each sending its next request when its previous one is answered,
    until `seconds` have passed (requests in flight then are waited for and counted)."""
    numbers = itertools.count()
    latencies: list[float] = []
    bad = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal bad
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            ok = await call(next(numbers))
            latencies.append(time.perf_counter() - sent)
            bad += not ok

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Sampled(latencies, bad, time.perf_counter() - started)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (q in (0, 1])."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- CPU accounting (Linux /proc) -------------------------------------------------------------

# The processes to account, by group: kafka, mongo, authz (all instances), bench (this one).
Pids = Callable[[], dict[str, list[int]]]
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (stat fields 14, 15)


def machine_busy_s() -> float:
    """CPU seconds the whole machine was busy (all cores), from the first line of /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) * TICK_S  # user..steal; guest time is inside user


def cpu_snapshot(pids: Pids) -> dict[str, float]:
    groups = {name: sum(process_cpu_s(p) for p in ps) for name, ps in pids().items()}
    groups["other"] = machine_busy_s() - sum(groups.values())
    return groups


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """CPU ms per request, by group. `other` is a difference of two readings taken a moment
    apart, so it can come out a hair below 0: shown as 0."""
    used = {name: (after[name] - before[name]) * 1e3 / requests for name in after}
    used["other"] = max(0.0, used["other"])
    return used


# --- one row of the table --------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    kind: str
    authz: str
    concurrency: int
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rate: float
    bad: int
    cpu_ms: dict[str, float]
    authz_ms: float | None = None
    split: str = "-"


async def measure_row(
    kind: str,
    call: Call,
    *,
    concurrency: int,
    opts: Options,
    pids: Pids,
    fleet: Fleet | None = None,
) -> Row:
    """A warm-up that is thrown away, then the measured stretch, with CPU and (for
    verifications) authz's own metrics read just before and just after it."""
    if opts.warmup > 0:
        await closed_loop(call, concurrency=concurrency, seconds=opts.warmup)
    checks_before = await verify_totals(fleet, kind) if fleet else []
    cpu_before = cpu_snapshot(pids)
    sampled = await closed_loop(call, concurrency=concurrency, seconds=opts.seconds)
    cpu_after = cpu_snapshot(pids)
    checks_after = await verify_totals(fleet, kind) if fleet else []
    ordered = sorted(sampled.latencies)
    if not ordered:
        raise BenchError(f"{kind}: no request completed")
    authz_ms, split = authz_side(checks_before, checks_after)
    return Row(
        kind=kind,
        authz=str(len(fleet.instances("authz"))) if fleet else "-",
        concurrency=concurrency,
        n=len(ordered),
        p50_ms=percentile(ordered, 0.50) * 1e3,
        p99_ms=percentile(ordered, 0.99) * 1e3,
        max_ms=ordered[-1] * 1e3,
        rate=len(ordered) / sampled.elapsed,
        bad=sampled.bad,
        cpu_ms=cpu_per_request(cpu_before, cpu_after, len(ordered)),
        authz_ms=authz_ms,
        split=split,
    )


# --- what authz itself reports (its /metrics) -------------------------------------------------


async def verify_totals(fleet: Fleet, kind: str) -> list[tuple[float, float]]:
    """(count, sum of seconds) of authz's verify-duration histogram for `kind`, per instance."""
    totals = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for instance in fleet.instances("authz"):
            text = (await http.get(f"{instance.url}/metrics")).text
            count = total = 0.0
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("kind") != kind:
                        continue
                    if sample.name == f"{VERIFY_METRIC}_count":
                        count += sample.value
                    elif sample.name == f"{VERIFY_METRIC}_sum":
                        total += sample.value
            totals.append((count, total))
    return totals


def authz_side(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> tuple[float | None, str]:
    """Mean check time in ms over the stretch, and each instance's share of the checks."""
    counts = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    seconds = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    done = sum(counts)
    if done <= 0:
        return None, "-"
    split = "/".join(f"{100 * c / done:.0f}" for c in counts) if len(counts) > 1 else "-"
    return seconds / done * 1e3, split


# --- credential kinds: one table entry each ---------------------------------------------------


@dataclass(frozen=True)
class Account:
    email: str
    password: str


# Prepares n credentials of a kind for `account`; raises KindUnavailable when it cannot.
Prepare = Callable[[AuthzClient, Account, int], Awaitable[list[SealedCredential]]]


@dataclass(frozen=True)
class Kind:
    prepare: Prepare
    probe: Callable[[], str | None] = lambda: None  # why it cannot run on this tree, or None


async def bounded(n: int, make: Callable[[int], Awaitable[T]], limit: int = 8) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(i: int) -> T:
        async with gate:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


def opened_secret(what: str, result: object) -> str:
    """The new secret out of an `issue_token`/`create_key` result: `(reply, secret)`, or a
    `Secret` with `.value` (the shape AuthzClient is moving to). A refusal raises."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        return result[1]
    value = getattr(result, "value", None)
    if isinstance(value, str):
        return value
    raise BenchError(f"{what} refused: {result!r}")


async def prepare_bearer(client: AuthzClient, account: Account, n: int) -> list[SealedCredential]:
    async def issue(i: int) -> SealedCredential:
        result: object = await client.issue_token(
            account.email, name=f"bench-{i}", scopes=(), expires_in_s=None
        )
        token = opened_secret("issue_token", result)
        return SealedCredential(kind=CredentialKind.BEARER, secret=token)

    return await bounded(n, issue)


async def prepare_password(client: AuthzClient, account: Account, n: int) -> list[SealedCredential]:
    """The same email:password n times: there is no cache on this path, each check is cold."""
    credential = SealedCredential(
        kind=CredentialKind.PASSWORD, secret=account.password, email=account.email
    )
    return [credential] * n


def probe_key() -> str | None:
    if hasattr(AuthzClient, "create_key"):
        return None
    return "AuthzClient has no create_key yet (legacy keys are being added to authz)"


def key_owner(create_key: Callable[..., Any], email: str) -> object:
    """`create_key`'s first argument: the email (as first planned), or an `AccountRef` by email
    when its signature asks for one (`contracts.commands`, where AuthzClient is going)."""
    first = next(iter(inspect.signature(create_key).parameters.values()))
    if "AccountRef" in str(first.annotation):
        commands = importlib.import_module("authbus_shared.contracts.commands")
        ref: object = commands.AccountRef(email=email)
        return ref
    return email


async def prepare_key(client: AuthzClient, account: Account, n: int) -> list[SealedCredential]:
    create_key: Any = getattr(client, "create_key", None)
    if create_key is None:
        raise KindUnavailable(probe_key() or "no create_key")
    owner = key_owner(create_key, account.email)

    async def create(i: int) -> SealedCredential:
        result: object = await create_key(owner, name=f"bench-{i}", scopes=(), expires_in_s=None)
        key = opened_secret("create_key", result)
        return SealedCredential(kind=CredentialKind.KEY, secret=key, email=account.email)

    return await bounded(n, create)


KINDS: dict[str, Kind] = {
    "bearer": Kind(prepare_bearer),
    "password": Kind(prepare_password),
    "key": Kind(prepare_key, probe=probe_key),
}


def partition_key(i: int, credential: SealedCredential) -> bytes:
    """Distinct per prepared credential (the api keys by a digest of the credential), so the
    requests spread over the partitions and, with 2 authz, over both instances."""
    return hashlib.sha256(f"{i}:".encode() + credential.model_dump_json().encode()).digest()


def verify_call(client: AuthzClient, credentials: list[SealedCredential]) -> Call:
    keys = [partition_key(i, c) for i, c in enumerate(credentials)]

    async def call(i: int) -> bool:
        j = i % len(credentials)
        try:
            verdict = await client.verify(credentials[j], partition_key=keys[j])
        except RpcTimeout:
            return False
        return isinstance(verdict, CredentialVerified) and verdict.outcome is Outcome.VALID

    return call


# --- baselines: the broker and the database on their own ---------------------------------------


class Echo:
    """One Kafka hop: publish an envelope with the project's `Publisher` (acks=all, idempotence,
    the settings' linger), wait until the reader hands it back, matched by correlation id."""

    PARTITIONS: ClassVar[int] = 1

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.metrics = KafkaMetrics("bench", CollectorRegistry())
        self._publisher = Publisher(kafka, client_id="bench-echo", metrics=self.metrics)
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        await self._publisher.start()
        await self.start_reading()

    async def stop(self) -> None:
        await self.stop_reading()
        await self._publisher.stop()

    async def start_reading(self) -> None:
        raise NotImplementedError

    async def stop_reading(self) -> None:
        raise NotImplementedError

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        """(key, partition) of message i."""
        raise NotImplementedError

    async def __call__(self, i: int) -> bool:
        correlation_id = new_id()
        payload = CredentialVerified(outcome=Outcome.INVALID)  # a reply-sized message
        envelope = wrap(payload, producer="bench", now=utcnow(), correlation_id=correlation_id)
        arrived = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = arrived
        key, partition = self.address(i)
        try:
            await self._publisher.publish(self.topic, envelope, key=key, partition=partition)
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await arrived
        except TimeoutError:
            return False
        finally:
            self._pending.pop(correlation_id, None)
        return True

    def arrived(self, envelope: Envelope) -> None:
        future = self._pending.get(envelope.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(None)


class AssignedEcho(Echo):
    """Read as the asker reads its replies: one partition, assigned, from its end, with the
    reply reader's consumer settings (`RpcClient`)."""

    async def start_reading(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            client_id="bench-echo",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,  # as RpcClient's reply reader
        )
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def stop_reading(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        return None, 0

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(MessageDecodeError):
                        self.arrived(decode(record.value))


class GroupEcho(Echo):
    """Read as authz reads its requests: the project's `GroupConsumer` (a consumer group, the
    batch handled, then its offsets committed), over as many partitions as `auth.verify.v1`,
    messages keyed to spread over them."""

    PARTITIONS = topics.AUTH_VERIFY.partitions

    async def start_reading(self) -> None:
        async def handle(envelope: Envelope) -> None:
            self.arrived(envelope)

        self._consumer = GroupConsumer(
            self.kafka,
            group_id=f"{self.topic}.group",
            topics=[self.topic],
            handler=handle,
            metrics=self.metrics,
            client_id="bench-echo-group",
            concurrency=64,  # as authz
        )
        await self._consumer.start()
        async with asyncio.timeout(30):
            while not self._consumer.caught_up:  # noqa: ASYNC110 - the consumer's own flag
                await asyncio.sleep(0.05)

    async def stop_reading(self) -> None:
        await self._consumer.stop()

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        return hashlib.sha256(str(i).encode()).digest(), None


@contextlib.asynccontextmanager
async def echoing(kafka: KafkaSettings, kind: type[Echo]) -> AsyncIterator[Echo]:
    topic = f"bench{uuid.uuid4().hex[:6]}.echo.v1"
    await ensure_topics(kafka, [TopicSpec(topic, kind.PARTITIONS, "bench: Kafka hops")])
    echo = kind(kafka, topic)
    await echo.start()
    try:
        yield echo
    finally:
        await echo.stop()


async def warm_broker(kafka: KafkaSettings, seconds: float) -> None:
    """Hops at a high rate through a group consumer (produce, fetch and offset commits),
    thrown away: the broker's JVM compiles its hot paths."""
    if seconds > 0:
        async with echoing(kafka.model_copy(update={"linger_ms": 0}), GroupEcho) as echo:
            await closed_loop(echo, concurrency=8, seconds=seconds)


async def kafka_baseline(
    kafka: KafkaSettings, label: str, kind: type[Echo], opts: Options, pids: Pids
) -> list[Row]:
    async with echoing(kafka, kind) as echo:
        return [
            await measure_row(label, echo, concurrency=c, opts=opts, pids=pids)
            for c in opts.concurrencies
        ]


async def mongo_baseline(cfg: infra.InfraConfig, opts: Options, pids: Pids) -> list[Row]:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(cfg.mongo_uri, tz_aware=True)
    try:
        collection = client[f"bench_{uuid.uuid4().hex[:6]}"]["probe"]
        docs = 64
        await collection.insert_many([{"_id": f"d{i}", "n": i} for i in range(docs)])

        async def find(i: int) -> bool:
            return await collection.find_one({"_id": f"d{i % docs}"}) is not None

        return [
            await measure_row("base:mongo", find, concurrency=c, opts=opts, pids=pids)
            for c in opts.concurrencies
        ]
    finally:
        client.close()


async def baselines(cfg: infra.InfraConfig, opts: Options, report: Report) -> None:
    pids = process_ids(cfg, None)
    kafka = opts.kafka(cfg.bootstrap)
    progress(f"warming the broker up ({opts.broker_warmup:g} s)")
    await warm_broker(kafka, opts.broker_warmup)
    progress("baselines")
    rows = await kafka_baseline(kafka, "base:kafka", AssignedEcho, opts, pids)
    if kafka.linger_ms != 0:
        unlingered = kafka.model_copy(update={"linger_ms": 0})
        rows += await kafka_baseline(unlingered, "base:kafka0", AssignedEcho, opts, pids)
    rows += await kafka_baseline(kafka, "base:group", GroupEcho, opts, pids)
    for row in rows + await mongo_baseline(cfg, opts, pids):
        report.add(row)


# --- the report -------------------------------------------------------------------------------


@dataclass
class Report:
    """Prints rows as they come (stdout: the table only; progress goes to stderr)."""

    opts: Options
    argv: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def header(self) -> None:
        cores = len(os.sched_getaffinity(0))
        linger = self.opts.kafka("-").linger_ms
        lines = [
            f"cold verification through Kafka (loopback, {cores} cores)    "
            f"target: p99 <= {TARGET_P99_MS:g} ms ({', '.join(TARGET_KINDS)}) at moderate load",
            f"command: {shlex.join(['.venv/bin/python', *self.argv])}",
            f"machine: {cores} cores usable ({os.cpu_count()} online), {cpu_model()}; "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; "
            f"Kafka {infra.KAFKA_VERSION}, SecantusDB {infra.SECANTUS_VERSION}; "
            f"load average at start {load_average()}",
            f"each row: {self.opts.warmup:g} s warm-up (thrown away), then {self.opts.seconds:g} s;"
            f" moderate load = {self.opts.concurrency} workers, closed loop; "
            f"producer linger {linger} ms; broker warmed up {self.opts.broker_warmup:g} s first",
            "",
            f"{'':<85}{'cpu ms per request':^30}",
            f"{'kind':<11}{'authz':>5}{'conc':>5}{'n':>7}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>8}"
            f"{'verif/s':>9}{'authz ms':>9}{'split':>7}{'bad':>5}  "
            + "".join(f"{g:>6}" for g in CPU_GROUPS)
            + "  target",
        ]
        print("\n".join(lines), flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        p99 = f"{row.p99_ms:.2f}{'*' if row.n < 100 else ' '}"
        authz_ms = f"{row.authz_ms:.2f}" if row.authz_ms is not None else "-"
        cpu = "".join(f"{row.cpu_ms.get(g, 0.0):>6.2f}" for g in CPU_GROUPS)
        print(
            f"{row.kind:<11}{row.authz:>5}{row.concurrency:>5}{row.n:>7}{row.p50_ms:>8.2f}"
            f"{p99:>9}{row.max_ms:>8.2f}{row.rate:>9.1f}{authz_ms:>9}{row.split:>7}"
            f"{row.bad:>5}  {cpu}  {self.verdict(row)}",
            flush=True,
        )

    def verdict(self, row: Row) -> str:
        moderate = self.opts.concurrency > 1 and row.concurrency == self.opts.concurrency
        if row.kind not in TARGET_KINDS or not moderate:
            return "-"
        return "met" if row.p99_ms <= TARGET_P99_MS and row.bad == 0 else "MISSED"

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(text)

    def footer(self, took_s: float) -> None:
        lines = [""]
        if any(r.n < 100 for r in self.rows):
            lines.append("p99*: fewer than 100 samples in that row; p99 is then the maximum.")
        lines += [
            "authz ms: mean time authz spent checking one credential (authz_verify_duration_"
            "seconds);",
            "  round trip ~ base:group (request leg) + authz ms + base:kafka (reply leg).",
            "base:group: a hop read by the project's GroupConsumer (commits after each batch), "
            "as authz reads;",
            "  base:kafka: a hop read by an assigned consumer, as the asker reads its replies.",
            "split: the share of checks each authz instance answered (%).",
            "cpu ms per request: CPU used in the stretch / requests; kafka = broker, mongo = "
            "SecantusDB,",
            "  authz = all instances, bench = this asker, other = the rest of the machine "
            "(should be ~0).",
        ]
        if any(r.kind == "base:kafka0" for r in self.rows):
            lines.append("base:kafka0: the same Kafka hop with linger_ms=0 (what linger costs).")
        lines += [f"note: {text}" for text in self.notes]
        lines.append(
            f"run took {took_s:.0f} s (start-up and stops included); "
            f"load average at end {load_average()}."
        )
        print("\n".join(lines), flush=True)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --- a fleet of authz instances ---------------------------------------------------------------


def process_ids(cfg: infra.InfraConfig, fleet: Fleet | None) -> Pids:
    def pids() -> dict[str, list[int]]:
        found: dict[str, list[int | None]] = {
            "kafka": [infra.kafka_process(cfg).pid()],
            "mongo": [infra.mongo_process(cfg).pid()],
            "authz": [fleet.process(i).pid() for i in fleet.instances("authz")] if fleet else [],
            "bench": [os.getpid()],
        }
        return {name: [p for p in ps if p is not None] for name, ps in found.items()}

    return pids


async def new_account(client: AuthzClient) -> Account:
    account = Account(f"bench-{uuid.uuid4().hex[:10]}@example.com", secrets.token_urlsafe(18))
    reply = await client.create_account(account.email, account.password, None)
    if getattr(reply, "account", None) is None:
        raise BenchError(f"create_account refused: {reply.TYPE} {reply.model_dump()}")
    return account


async def measure_kind(
    client: AuthzClient, fleet: Fleet, account: Account, name: str, report: Report
) -> None:
    opts = report.opts
    try:
        credentials = await KINDS[name].prepare(client, account, opts.credentials)
    except KindUnavailable as exc:
        report.note(f"{name} skipped: {exc}")
        return
    call = verify_call(client, credentials)
    pids = process_ids(fleet.infra, fleet)
    for concurrency in opts.concurrencies:
        progress(f"{name}, {len(fleet.instances('authz'))} authz, concurrency {concurrency}")
        row = await measure_row(
            name, call, concurrency=concurrency, opts=opts, pids=pids, fleet=fleet
        )
        report.add(row)


async def measure_fleet(fleet: Fleet, prefix: str, kinds: Sequence[str], report: Report) -> None:
    kafka = report.opts.kafka(fleet.infra.bootstrap, prefix)
    settings = AdminSettings(kafka=kafka, timeout_s=REPLY_TIMEOUT_S)
    async with connected(settings) as client:
        account = await new_account(client)
        for name in kinds:
            await measure_kind(client, fleet, account, name, report)


def run_fleet(cfg: infra.InfraConfig, authz: int, kinds: Sequence[str], report: Report) -> None:
    """Start `authz` instances (nothing else) on a fresh topic prefix and database, measure
    every kind, stop them."""
    tag = uuid.uuid4().hex[:6]
    counts: dict[Service, int] = {"authz": authz}
    env = {"KAFKA__TOPIC_PREFIX": f"bench{tag}.", "MONGO__DATABASE": f"bench_{tag}"}
    if report.opts.linger_ms is not None:
        env["KAFKA__LINGER_MS"] = str(report.opts.linger_ms)
    fleet = Fleet(cfg, counts, Ports(authz=free_port_run(authz)), env=env)
    try:
        progress(f"starting {authz} authz (logs: {fleet.folder})")
        fleet.start_all()
        asyncio.run(measure_fleet(fleet, env["KAFKA__TOPIC_PREFIX"], kinds, report))
    finally:
        with uninterrupted():
            progress(f"stopping {authz} authz")
            fleet.stop_all()


# --- processes, ports, signals ----------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(length: int) -> int:
    """The first of `length` consecutive free loopback ports, below the kernel's ephemeral
    range, as tests/support.py chooses them: a port from that range (what binding port 0 gives)
    can be taken as the source port of an outgoing connection before the server binds it."""
    low, _ = _ephemeral_range()
    for _ in range(1000):
        first = random.randrange(10_000, low - length)
        if all(_bindable(p) for p in range(first, first + length)):
            return first
    raise BenchError("no run of free ports found")


def free_port() -> int:
    return free_port_run(1)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Stopping what we started is not cut short by a second Ctrl-C."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the run is, so the `finally` blocks
    stop what was started. Our own handler also keeps `asyncio.run` from installing its one,
    which only cancels the main task and can lose the interrupt: in trials here, a Ctrl-C
    during a verification row was sometimes ignored and the run carried on to its end. A
    SIGINT ignored from the start (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def runnable_kinds(opts: Options, report: Report) -> list[str]:
    kinds = []
    for name in opts.kinds:
        why = KINDS[name].probe()
        if why is None:
            kinds.append(name)
        else:
            report.note(f"{name} skipped: {why}")
    return kinds


def run(opts: Options, report: Report) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="authbus-bench-"))
    cfg = infra.InfraConfig(
        run_dir=run_dir, kafka_port=free_port(), controller_port=free_port(), mongo_port=free_port()
    )
    kinds = runnable_kinds(opts, report)
    finished = False
    try:
        progress(f"starting Kafka and SecantusDB in {run_dir}")
        took = infra.start(cfg)
        progress(f"infrastructure ready (kafka {took['kafka']:.1f} s, mongo {took['mongo']:.1f} s)")
        asyncio.run(baselines(cfg, opts, report))
        for authz in opts.authz:
            run_fleet(cfg, authz, kinds, report)
        finished = True
    finally:
        with uninterrupted():
            progress("stopping Kafka and SecantusDB")
            infra.stop(cfg)
            if finished and not opts.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                progress(f"run folder kept (logs): {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    quiet = LogSettings(level="WARNING", format="console")
    logs.configure(quiet, service="bench", instance="bench", stream=sys.stderr)
    catch_interrupts()
    report = Report(opts, [sys.argv[0], *args])
    started = time.monotonic()
    report.header()
    try:
        run(opts, report)
    except KeyboardInterrupt:
        progress("interrupted; everything started was stopped")
        return 130
    report.footer(time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
