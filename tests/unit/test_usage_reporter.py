"""The api's usage reporter (SPEC A7): each request records its credential's use in memory;
one report per interval carries every credential used since, with how often; a use that
happens while a report is on its way is neither lost nor counted twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from authbus_api.core.access import Principal
from authbus_api.core.verdict_cache import Account
from authbus_api.usage import UsageReporter
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.envelope import Envelope, payload_of
from authbus_shared.contracts.events import CredentialsUsed
from authbus_shared.kafka.producer import Publisher

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
ANN = Account("a1", "ann@example.com")


def who(credential: str | None, method: AuthMethod = AuthMethod.TOKEN) -> Principal:
    return Principal(ANN, method, (), credential)


class Reports:
    """A publisher that keeps what it is given; `hold` makes the next publish wait."""

    def __init__(self) -> None:
        self.sent: list[CredentialsUsed] = []
        self.hold: asyncio.Event | None = None

    async def publish(self, topic: str, envelope: Envelope, **_: Any) -> None:
        if self.hold is not None:
            await self.hold.wait()
        payload = payload_of(envelope)
        assert isinstance(payload, CredentialsUsed)
        self.sent.append(payload)


def reporter(reports: Reports) -> UsageReporter:
    return UsageReporter(
        cast(Publisher, reports), topic="t", instance_id="api-0", interval=timedelta(seconds=1)
    )


def counts(reports: Reports) -> dict[str, tuple[int, datetime]]:
    out: dict[str, tuple[int, datetime]] = {}
    for report in reports.sent:
        for use in report.uses:
            count, _ = out.get(use.credential_id, (0, T0))
            out[use.credential_id] = (count + use.count, use.last_used_at)
    return out


async def test_uses_are_merged_per_credential_with_the_latest_time() -> None:
    reports = Reports()
    usage = reporter(reports)
    for i in range(3):
        usage.used(who("t1"), T0 + timedelta(seconds=i))
    usage.used(who("k1", AuthMethod.KEY), T0)
    usage.used(who(None), T0)  # nothing to record
    usage.used(who("pw", AuthMethod.PASSWORD), T0)  # a password has no record
    await usage.flush()
    assert counts(reports) == {"t1": (3, T0 + timedelta(seconds=2)), "k1": (1, T0)}
    await usage.flush()
    assert len(reports.sent) == 1  # nothing left to say


async def test_a_use_during_a_report_goes_in_the_next_one_exactly_once() -> None:
    reports = Reports()
    usage = reporter(reports)
    usage.used(who("t1"), T0)
    usage.used(who("t1"), T0)
    reports.hold = asyncio.Event()
    sending = asyncio.create_task(usage.flush())
    await asyncio.sleep(0)  # the report (count 2) is on its way
    usage.used(who("t1"), T0 + timedelta(seconds=5))
    reports.hold.set()
    await sending
    reports.hold = None
    await usage.flush()
    assert [u.count for r in reports.sent for u in r.uses] == [2, 1]
    assert counts(reports) == {"t1": (3, T0 + timedelta(seconds=5))}
