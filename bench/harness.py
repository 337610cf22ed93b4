"""What every benchmark that needs the real infrastructure does around its measurements:
Kafka (and SecantusDB) on free loopback ports in a temp folder, service fleets on top, all of
it stopped on the way out, Ctrl-C included; the folder (logs) kept after a failure or on ask."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from authbus_dev import infra
from authbus_dev.fleet import Fleet
from authbus_dev.ports import free_port
from bench.verify_over_kafka.console import progress
from bench.verify_over_kafka.interrupts import uninterrupted


@contextlib.contextmanager
def local_infrastructure(
    prefix: str, *, keep: bool, mongo: bool = True
) -> Iterator[infra.InfraConfig]:
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    cfg = infra.InfraConfig(
        run_dir=run_dir, kafka_port=free_port(), controller_port=free_port(), mongo_port=free_port()
    )
    what = "Kafka and SecantusDB" if mongo else "Kafka"
    finished = False
    try:
        progress(f"starting {what} in {run_dir}")
        if mongo:
            took = infra.start(cfg)
            progress(f"ready (kafka {took['kafka']:.1f} s, mongo {took['mongo']:.1f} s)")
        else:
            infra.start_kafka(cfg)
            progress(f"Kafka ready in {infra.wait_kafka(cfg):.1f} s")
        yield cfg
        finished = True
    finally:
        with uninterrupted():
            progress(f"stopping {what}")
            infra.stop(cfg)
            if finished and not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                progress(f"run folder kept (logs): {run_dir}")


@contextlib.contextmanager
def running(fleet: Fleet, what: str) -> Iterator[Fleet]:
    """`fleet` started (each service once the previous is ready), stopped on the way out."""
    try:
        progress(f"starting {what} (logs: {fleet.folder})")
        fleet.start_all()
        yield fleet
    finally:
        with uninterrupted():
            progress(f"stopping {what}")
            fleet.stop_all()
