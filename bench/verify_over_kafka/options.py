"""The command line: what to measure, for how long, at which loads."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authbus_shared.settings import KafkaSettings

from .console import cores
from .kinds import KINDS
from .load import Arrivals, Closed, Load, Open

TARGET_P99_MS = 10.0
TARGET_KINDS = ("bearer", "key")
ARGON2_PER_CORE_S = 40  # an argon2id check with the default parameters costs >= 20 ms of CPU
MODULE = "bench.verify_over_kafka"
USAGE = f"python -m {MODULE}"
DESCRIPTION = "Cold credential verification through Kafka, as the api sees it on a cache miss."


@dataclass(frozen=True)
class Options:
    seconds: float
    concurrency: int
    rates: tuple[float, ...]  # open-loop rates (per second) for bearer, key and the baselines
    password_rates: tuple[float, ...]  # the same for the argon2 kinds
    arrivals: Arrivals
    authz: tuple[int, ...]
    kinds: tuple[str, ...]
    warmup: float
    broker_warmup: float
    linger_ms: int | None  # None: the project's default
    keep: bool
    record_cache: bool = True  # authz's record cache (ADR 0019); off: every check reads MongoDB

    @property
    def concurrencies(self) -> tuple[int, ...]:
        """Closed-loop rows: 1 in flight (unloaded latency), then --concurrency (saturation)."""
        return (1,) if self.concurrency == 1 else (1, self.concurrency)

    def rates_for(self, kind: str) -> tuple[float, ...]:
        """Open-loop rows of a credential kind or baseline: argon2 kinds have their own."""
        spec = KINDS.get(kind)
        return self.password_rates if spec is not None and spec.argon2 else self.rates

    def loads(self, kind: str) -> list[Load]:
        """The rows of a kind or baseline, in order: closed loops, then open loops."""
        closed: list[Load] = [Closed(c) for c in self.concurrencies]
        return closed + [Open(rate, self.arrivals) for rate in self.rates_for(kind)]

    @property
    def failed_logins(self) -> int:
        """At most how many requests a failed-login kind gets in one fleet, warm-ups included:
        closed rows at no more than 40 argon2 checks per second per core, open rows at their
        rates (10% margin for Poisson counts)."""
        closed = len(self.concurrencies) * ARGON2_PER_CORE_S * cores()
        busy = (closed + sum(self.password_rates)) * (self.warmup + self.seconds)
        return math.ceil(1.1 * busy)

    @property
    def credentials(self) -> int:
        """How many credentials each kind prepares (distinct tokens/keys, partition keys)."""
        return max(64, 4 * self.concurrency)

    def kafka(self, bootstrap: str, topic_prefix: str = "") -> KafkaSettings:
        settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
        if self.linger_ms is None:
            return settings
        return settings.model_copy(update={"linger_ms": self.linger_ms})


def _list_of(convert: Callable[[str], float]) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(convert(part) for part in text.split(",") if part.strip())
        except ValueError:
            values = ()
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError("a comma-separated list of positive numbers")
        return values

    return parse


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in _list_of(int)(text))


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in KINDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"kinds among {', '.join(KINDS)}; unknown: {unknown}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=USAGE, description=DESCRIPTION)
    add = parser.add_argument
    add("--seconds", type=float, default=10.0, help="measured seconds per row")
    add("--concurrency", type=int, default=8, help="closed-loop workers of the saturation rows")
    add("--rates", type=_list_of(float), default=(100.0, 200.0), help="open-loop rates, per s")
    add("--password-rates", type=_list_of(float), default=(10.0, 20.0), help="the same, argon2")
    add("--arrivals", choices=("poisson", "fixed"), default="poisson", help="open-loop sends")
    add("--authz", type=_int_list, default=(1, 2), help="authz counts, e.g. 1,2")
    add("--kinds", type=_name_list, default=tuple(KINDS), help=f"among {','.join(KINDS)}")
    add("--warmup", type=float, default=1.0, help="discarded seconds before each row")
    add("--broker-warmup", type=float, default=10.0, help="seconds of Kafka hops before all rows")
    add("--linger-ms", type=int, default=None, help="producer linger, both sides (default: as is)")
    add("--keep", action="store_true", help="keep the run folder (logs)")
    add(
        "--record-cache",
        choices=("on", "off"),
        default="on",
        help="authz's record cache (ADR 0019); off: every check reads MongoDB",
    )
    return parser


def parse_args(argv: Sequence[str]) -> Options:
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.seconds <= 0 or ns.concurrency < 1 or ns.warmup < 0 or ns.broker_warmup < 0:
        parser.error("--seconds > 0, --concurrency >= 1, warm-ups >= 0")
    if ns.linger_ms is not None and not 0 <= ns.linger_ms <= 1000:
        parser.error("--linger-ms between 0 and 1000")
    return Options(
        seconds=ns.seconds,
        concurrency=ns.concurrency,
        rates=ns.rates,
        password_rates=ns.password_rates,
        arrivals=ns.arrivals,
        authz=ns.authz,
        kinds=ns.kinds,
        warmup=ns.warmup,
        broker_warmup=ns.broker_warmup,
        linger_ms=ns.linger_ms,
        keep=ns.keep,
        record_cache=ns.record_cache == "on",
    )
