"""Fixtures every tier may use. The real infrastructure is started lazily, once per session,
only when an integration or e2e test asks for it, by the project's own tooling
(`authbus_dev.infra`: Kafka from its Maven Central jars, SecantusDB from PyPI)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbus_dev import infra
from authbus_dev.ports import free_port

TIERS = ("integration", "e2e", "fault", "compose")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder: tests/integration/* are `integration`, tests/e2e/* are `e2e`, ..."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@contextlib.contextmanager
def local_infrastructure(run_dir: Path) -> Iterator[infra.InfraConfig]:
    """A real Kafka broker and MongoDB-wire server on free loopback ports, in `run_dir`."""
    cfg = infra.InfraConfig(
        run_dir=run_dir, kafka_port=free_port(), controller_port=free_port(), mongo_port=free_port()
    )
    try:
        infra.start(cfg)
        yield cfg
    finally:
        infra.stop(cfg)


@pytest.fixture(scope="session")
def infrastructure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.InfraConfig]:
    """The session's broker and database (integration and e2e tests)."""
    with local_infrastructure(tmp_path_factory.mktemp("infra")) as cfg:
        yield cfg


@pytest.fixture
def unique() -> str:
    """A fresh name for this test's topics, groups and database."""
    return f"t{uuid.uuid4().hex[:10]}"
