"""Log levels tell operators what needs them: aiokafka's retried failures are warnings."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, IllegalStateError

from authbus_shared import logs
from authbus_shared.settings import LogSettings


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    logs.configure(LogSettings(format="json"), service="t", instance="t-0", stream=stream)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _levels(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["level"] for line in stream.getvalue().splitlines()]


def test_failures_aiokafka_retries_itself_are_warnings(output: io.StringIO) -> None:
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    logging.getLogger("aiokafka.conn").error('Unable connect to "%s:%s": %s', "h", 9092, "refused")

    assert _levels(output) == ["warning", "warning"]


def test_other_errors_stay_errors(output: io.StringIO) -> None:
    logging.getLogger("aiokafka.consumer").error("Unexpected: %s", IllegalStateError("x"))
    logging.getLogger("authbus").error("Group Coordinator Request failed: %s", "not aiokafka")

    assert _levels(output) == ["error", "error"]
