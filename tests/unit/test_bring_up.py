"""`authbus-dev up` never stops healthy instances because one is slow (issue #9): the bring-up
(`authbus_dev.bringup`) on a fake process table and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from authbus_dev.bringup import BringUp
from authbus_dev.fleet import Fleet, Instance, Service
from authbus_dev.infra import InfraConfig

COUNTS: dict[Service, int] = {"authz": 2, "ratelimit": 1, "api": 2}


@dataclass
class FakeTable:
    """Processes that become ready `ready_after` seconds after they start (None: never), or
    exit at once `exits` times before they run."""

    clock: list[float]
    ready_after: dict[str, float | None] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # the bring-up never stops anyone

    def start(self, instance: Instance) -> None:
        self.starts.append(instance.name)
        self.started[instance.name] = self.clock[0]

    def running(self, instance: Instance) -> bool:
        if self.exits.get(instance.name, 0) > 0:
            self.exits[instance.name] -= 1
            return False
        return True

    def ready(self, instance: Instance) -> bool:
        after = self.ready_after.get(instance.name, 1.0)
        if after is None or self.exits.get(instance.name, 0) > 0:
            return False
        return self.clock[0] - self.started[instance.name] >= after

    def tail(self, instance: Instance) -> str:
        return f"(log of {instance.name})"


def run(
    table: FakeTable, seconds: float, *, slow_after_s: float = 60.0, max_restarts: int = 3
) -> tuple[BringUp, list[str]]:
    """Step the bring-up every 0.5 s of fake time for `seconds`."""
    fleet = Fleet(InfraConfig(run_dir=Path("/nonexistent")), COUNTS)
    reports: list[str] = []
    bring = BringUp(
        table,
        fleet.instances(),
        report=reports.append,
        clock=lambda: table.clock[0],
        slow_after_s=slow_after_s,
        max_restarts=max_restarts,
    )
    while table.clock[0] <= seconds:
        bring.step()
        table.clock[0] += 0.5
    return bring, reports


def test_a_healthy_fleet_comes_up_in_order() -> None:
    table = FakeTable(clock=[0.0])

    bring, reports = run(table, 10)

    assert bring.usable and bring.settled and not bring.hopeless
    assert table.starts == ["authz-0", "authz-1", "ratelimit-0", "api-0", "api-1"]
    assert table.started["ratelimit-0"] >= 1.0  # after an authz was ready
    assert len([r for r in reports if r.endswith("s)")]) == 5


def test_a_slow_instance_is_reported_and_waited_for_while_the_others_keep_running() -> None:
    table = FakeTable(clock=[0.0], ready_after={"api-1": None})

    bring, reports = run(table, 130, slow_after_s=60)

    assert bring.usable and not bring.settled and not bring.hopeless
    assert bring.pending() == ["api-1"]
    slow = [r for r in reports if r.startswith("api-1 not ready")]
    assert len(slow) == 2  # at 60 s and 120 s, with its log
    assert "(log of api-1)" in slow[0]
    assert table.starts.count("api-1") == 1 and table.stopped == []


def test_a_late_instance_that_becomes_ready_settles_the_fleet() -> None:
    table = FakeTable(clock=[0.0], ready_after={"authz-1": 90.0})

    bring, reports = run(table, 100, slow_after_s=60)

    assert bring.settled
    assert any(r.startswith("authz-1 not ready after 60s") for r in reports)
    assert any(r.startswith("authz-1 ready (90") for r in reports)
    assert table.started["api-0"] < 10  # the api did not wait for the slow authz


def test_an_instance_that_exits_is_started_again_then_given_up_on() -> None:
    table = FakeTable(clock=[0.0], exits={"api-0": 2, "api-1": 10})

    bring, reports = run(table, 20, max_restarts=3)

    assert bring.usable and bring.settled and not bring.hopeless  # api-0 made it
    assert table.starts.count("api-0") == 3
    assert table.starts.count("api-1") == 4
    assert any(r.startswith("api-1 exited 4 times; left stopped") for r in reports)


def test_only_a_service_with_no_instance_left_is_hopeless() -> None:
    table = FakeTable(clock=[0.0], exits={"authz-0": 10, "authz-1": 10})

    bring, _ = run(table, 20, max_restarts=1)

    assert bring.hopeless and not bring.usable
    assert "api-0" not in table.starts  # never started without an authz
