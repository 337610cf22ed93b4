"""Bringing a fleet up without giving up on it (`authbus-dev up`).

One slow or crashing instance must not take the healthy ones down with it (issue #9): the
bring-up never stops an instance. It is a loop of `step()`s over a process table:
- services start in `START_ORDER`, each once every earlier service has a ready instance
  (authz creates the keys the api waits for; one ready authz is enough to go on);
- an instance that is ready is reported once, with the time it took;
- an instance not ready `slow_after_s` after its start is reported as slow (with its log's
  tail), and again every `slow_after_s`; it is waited for, never stopped;
- an instance that exited is started again, up to `max_restarts` times, then given up on
  (reported, left stopped).
The fleet is *usable* once every service has a ready instance, *settled* once every instance
is ready or given up on, and *hopeless* once every instance of some service was given up on
(only then does `up` stop the rest: nothing could answer a request).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from authbus_dev.fleet import START_ORDER, Fleet, Instance


class ProcessTable(Protocol):
    """What the bring-up needs of the processes (`FleetTable`; a fake in the unit tests)."""

    def start(self, instance: Instance) -> None: ...

    def running(self, instance: Instance) -> bool: ...

    def ready(self, instance: Instance) -> bool: ...

    def tail(self, instance: Instance) -> str: ...


@dataclass
class FleetTable:
    """The real table: the fleet's processes, readiness from their `/readyz`."""

    fleet: Fleet

    def start(self, instance: Instance) -> None:
        self.fleet.start(instance)

    def running(self, instance: Instance) -> bool:
        return self.fleet.process(instance).running()

    def ready(self, instance: Instance) -> bool:
        try:
            return httpx.get(f"{instance.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, instance: Instance) -> str:
        return self.fleet.process(instance).tail(6)


@dataclass
class Watched:
    """One instance as the bring-up sees it."""

    started_at: float
    restarts: int = 0
    ready: bool = False
    given_up: bool = False
    reported_slow_at: float | None = None


class BringUp:
    def __init__(
        self,
        table: ProcessTable,
        instances: Sequence[Instance],
        *,
        report: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        slow_after_s: float = 60.0,
        max_restarts: int = 3,
    ) -> None:
        self._table = table
        self._instances = list(instances)
        self._report = report
        self._clock = clock
        self._slow_after = slow_after_s
        self._max_restarts = max_restarts
        self.watched: dict[str, Watched] = {}

    def step(self) -> None:
        """Check every started instance, then start the next services whose turn has come."""
        for instance in self._instances:
            watched = self.watched.get(instance.name)
            if watched is not None and not (watched.ready or watched.given_up):
                self._check(instance, watched)
        for instance in self._instances:
            if instance.name not in self.watched and self._turn_of(instance.service):
                self._table.start(instance)
                self.watched[instance.name] = Watched(started_at=self._clock())

    def until(
        self, done: Callable[[], bool], *, pause_s: float = 0.5, timeout_s: float | None = None
    ) -> bool:
        """Step until `done()` (True) or `timeout_s` has passed (False)."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        while True:
            self.step()
            if done():
                return True
            if deadline is not None and self._clock() >= deadline:
                return False
            time.sleep(pause_s)

    @property
    def usable(self) -> bool:
        return all(self._any_ready(s) for s in START_ORDER if self._of(s))

    @property
    def settled(self) -> bool:
        return len(self.watched) == len(self._instances) and all(
            w.ready or w.given_up for w in self.watched.values()
        )

    @property
    def hopeless(self) -> bool:
        return any(
            all(self.watched.get(i.name, Watched(0.0)).given_up for i in group)
            for s in START_ORDER
            if (group := self._of(s))
        )

    def pending(self) -> list[str]:
        """Instances neither ready nor given up on."""
        return [n for n, w in self.watched.items() if not (w.ready or w.given_up)]

    def _check(self, instance: Instance, watched: Watched) -> None:
        now = self._clock()
        if self._table.ready(instance):
            watched.ready = True
            self._report(f"{instance.name} ready ({now - watched.started_at:.1f}s)")
        elif not self._table.running(instance):
            self._exited(instance, watched, now)
        elif now - (watched.reported_slow_at or watched.started_at) >= self._slow_after:
            watched.reported_slow_at = now
            self._report(
                f"{instance.name} not ready after {now - watched.started_at:.0f}s; still "
                f"waiting (the others keep running). Log tail:\n{self._table.tail(instance)}"
            )

    def _exited(self, instance: Instance, watched: Watched, now: float) -> None:
        tail = self._table.tail(instance)
        if watched.restarts >= self._max_restarts:
            watched.given_up = True
            self._report(
                f"{instance.name} exited {watched.restarts + 1} times; left stopped. "
                f"Log tail:\n{tail}"
            )
            return
        watched.restarts += 1
        watched.started_at, watched.reported_slow_at = now, None
        self._report(
            f"{instance.name} exited; starting it again "
            f"({watched.restarts}/{self._max_restarts}). Log tail:\n{tail}"
        )
        self._table.start(instance)

    def _of(self, service: str) -> list[Instance]:
        return [i for i in self._instances if i.service == service]

    def _any_ready(self, service: str) -> bool:
        return any(self.watched.get(i.name, Watched(0.0)).ready for i in self._of(service))

    def _turn_of(self, service: str) -> bool:
        earlier = START_ORDER[: START_ORDER.index(service)]
        return all(self._any_ready(s) for s in earlier if self._of(s))
