"""Orchestration: start the infrastructure, run the baselines, then per authz count start a
fleet and measure every kind; stop everything on the way out, Ctrl-C included."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence

from authbus_authz.admin import AdminSettings, connected
from authbus_dev import infra
from authbus_dev.fleet import Fleet, Ports, Service
from authbus_dev.ports import free_port_run
from authbus_shared import logs
from authbus_shared.authz_client import AuthzClient
from authbus_shared.settings import LogSettings
from bench.harness import local_infrastructure, running

from . import cpu
from .baselines import REPLY_TIMEOUT_S, baselines
from .console import progress
from .interrupts import catch_interrupts, run_async
from .kinds import KINDS, Account, BenchError, new_account, verify_call
from .measure import Measured, measure_all
from .options import MODULE, Options, parse_args
from .report import Report


async def measure_kind(
    client: AuthzClient, fleet: Fleet, account: Account, name: str, report: Report
) -> None:
    kind = KINDS[name]
    try:
        n = report.opts.failed_logins if kind.failed_login else report.opts.credentials
        source = await kind.prepare(client, account, n)
    except BenchError as exc:
        report.note(f"{name} skipped: {exc}")
        return
    call = verify_call(client, source, kind.expected)
    pids = cpu.process_ids(fleet.infra, fleet)
    what = Measured(name, call, pids, fleet, kind.credential.value)
    await measure_all(what, report.opts, report.add)


async def measure_fleet(fleet: Fleet, prefix: str, report: Report) -> None:
    kafka = report.opts.kafka(fleet.infra.bootstrap, prefix)
    settings = AdminSettings(kafka=kafka, timeout_s=REPLY_TIMEOUT_S)
    async with connected(settings) as client:
        account = await new_account(client)
        for name in report.opts.kinds:
            await measure_kind(client, fleet, account, name, report)


def run_fleet(cfg: infra.InfraConfig, authz: int, report: Report) -> None:
    """Start `authz` instances (nothing else) on a fresh topic prefix and database, measure
    every kind, stop them."""
    tag = uuid.uuid4().hex[:6]
    counts: dict[Service, int] = {"authz": authz}
    env = {"KAFKA__TOPIC_PREFIX": f"bench{tag}.", "MONGO__DATABASE": f"bench_{tag}"}
    if report.opts.linger_ms is not None:
        env["KAFKA__LINGER_MS"] = str(report.opts.linger_ms)
    if not report.opts.record_cache:
        env["RECORD_CACHE__MAX_ENTRIES"] = "0"
    fleet = Fleet(cfg, counts, Ports(authz=free_port_run(authz)), env=env)
    with running(fleet, f"{authz} authz"):
        run_async(measure_fleet(fleet, env["KAFKA__TOPIC_PREFIX"], report))


def run(opts: Options, report: Report) -> None:
    with local_infrastructure("authbus-bench-", keep=opts.keep) as cfg:
        run_async(baselines(cfg, opts, report))
        for authz in opts.authz:
            run_fleet(cfg, authz, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    quiet = LogSettings(level="WARNING", format="console")
    logs.configure(quiet, service="bench", instance="bench", stream=sys.stderr)
    catch_interrupts()
    report = Report(opts, ["-m", MODULE, *args])
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
