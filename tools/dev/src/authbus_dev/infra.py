"""The local infrastructure: the real Apache Kafka broker and SecantusDB (a MongoDB-wire server).

No Docker on the build machines, so both run as plain processes:
- Kafka: the broker's jars from Maven Central (infra/kafka/pom.xml) via Maven into
  `.cache/kafka/<version>/libs`; a single-node KRaft broker+controller on loopback.
- SecantusDB: the PyPI package in its own virtualenv under `.cache/tools/` (kept apart from the
  services' dependencies, as a real mongod would be).

Downloads are skipped when present. Data, logs and pids live in a run folder (`.run/<name>`),
ports come from `InfraConfig`. Used by `authbus-dev` and by the test fixtures alike.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from authbus_dev.paths import CACHE, REPO
from authbus_dev.procs import Managed

KAFKA_VERSION = "4.1.1"
SECANTUS_VERSION = "0.7.0b3"
KAFKA_HEAP = "-Xms256m -Xmx1g"


class InfraError(RuntimeError):
    """Infrastructure could not be installed or started; the message says why."""


@dataclass(frozen=True)
class InfraConfig:
    run_dir: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    mongo_port: int = 27017

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}"


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise InfraError(f"{what} failed ({result.returncode}):\n{output}")


# --- Kafka ---------------------------------------------------------------------------------


def kafka_libs() -> Path:
    return CACHE / "kafka" / KAFKA_VERSION / "libs"


def install_kafka() -> Path:
    """Fetch the broker's jars unless they are there (for this pom.xml); returns the libs folder."""
    libs = kafka_libs()
    stamp = libs / ".complete"
    pom = REPO / "infra" / "kafka" / "pom.xml"
    wanted = f"{KAFKA_VERSION} {hashlib.sha256(pom.read_bytes()).hexdigest()[:16]}"
    if stamp.exists() and stamp.read_text() == wanted:
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise InfraError("Kafka needs java (17+) and mvn on PATH")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            "mvn",
            "-q",
            "-B",
            f"-Dmaven.repo.local={CACHE / 'm2'}",
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        "fetching the Kafka jars with Maven",
        cwd=REPO / "infra" / "kafka",
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    stamp.write_text(wanted)
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in url-safe base64, never starting with "-" (the
    storage tool would read it as an option; Kafka's own Uuid.randomUuid() avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_process(cfg: InfraConfig) -> Managed:
    return Managed("kafka", cfg.run_dir / "kafka")


def _kafka_properties(cfg: InfraConfig, data: Path) -> str:
    c, p = cfg.controller_port, cfg.kafka_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{c}",
            f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data.resolve()}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Kafka 4's group coordinator waits 5 ms to batch its appends: every offset
            # commit paid it (bench/verify_over_kafka.py); latency matters more here.
            "group.coordinator.append.linger.ms=0",
            "log.retention.check.interval.ms=60000",
            "",
        ]
    )


LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
# Group joins, rebalances and their reasons (one line each): what explains a rebalance loop.
logger.groups.name = org.apache.kafka.coordinator.group.GroupMetadataManager
logger.groups.level = INFO
"""


def start_kafka(cfg: InfraConfig) -> None:
    libs = install_kafka()
    folder = cfg.run_dir / "kafka"
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = folder / "server.properties"
    props.write_text(_kafka_properties(cfg, data))
    (folder / "log4j2.properties").write_text(LOG4J2)
    cluster_file = folder / "cluster-id"
    if not cluster_file.exists():
        cluster_file.write_text(new_cluster_id())
    classpath = f"{libs}/*"
    if not (data / "meta.properties").exists():  # formatted already: a restart skips a JVM
        _run(
            [
                "java",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_file.read_text().strip(),
                "-c",
                str(props),
                "--ignore-formatted",
            ],
            "formatting Kafka storage",
        )
    kafka_process(cfg).start(
        [
            "java",
            *KAFKA_HEAP.split(),
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
    )


async def _kafka_answers(bootstrap: str) -> bool:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refusals are expected here
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception:  # not up yet: any client error means "try again"
        return False
    finally:
        await admin.close()
    return True


def wait_kafka(cfg: InfraConfig, timeout_s: float = 90.0) -> float:
    """Block until an admin client lists topics; returns the seconds it took."""
    started = time.monotonic()
    proc = kafka_process(cfg)
    while not asyncio.run(_kafka_answers(cfg.bootstrap)):
        if not proc.running():
            raise InfraError(f"Kafka exited during start; log tail:\n{proc.tail()}")
        if time.monotonic() - started > timeout_s:
            raise InfraError(f"Kafka not ready after {timeout_s}s; log tail:\n{proc.tail()}")
        time.sleep(0.5)
    return time.monotonic() - started


# --- SecantusDB (MongoDB wire protocol) -----------------------------------------------------


def secantus_home() -> Path:
    return CACHE / "tools" / f"secantusdb-{SECANTUS_VERSION}"


def uv_binary() -> str:
    local = CACHE / "uv" / "bin" / "uv"
    if local.exists():
        return str(local)
    found = shutil.which("uv")
    if found is None:
        raise InfraError("uv not found: run scripts/bootstrap.sh first")
    return found


def install_secantus() -> Path:
    """Install SecantusDB in its own virtualenv unless it is there; returns its server binary."""
    home = secantus_home()
    server = home / "bin" / "secantusd-py"
    stamp = home / ".complete"
    if stamp.exists():
        return server
    uv = uv_binary()
    shutil.rmtree(home, ignore_errors=True)
    _run([uv, "venv", "--quiet", "--python", "3.11", str(home)], "creating the SecantusDB venv")
    python = str(home / "bin" / "python")
    package = f"secantusdb=={SECANTUS_VERSION}"
    _run([uv, "pip", "install", "--quiet", "--python", python, package], "installing SecantusDB")
    stamp.write_text(SECANTUS_VERSION)
    return server


def mongo_process(cfg: InfraConfig) -> Managed:
    return Managed("secantusdb", cfg.run_dir / "mongo")


def start_mongo(cfg: InfraConfig) -> None:
    server = install_secantus()
    data = cfg.run_dir / "mongo" / "data"
    data.mkdir(parents=True, exist_ok=True)
    mongo_process(cfg).start(
        [
            str(server),
            "--host",
            "127.0.0.1",
            "--port",
            str(cfg.mongo_port),
            "--storage-path",
            str(data.resolve()),
            "--log-level",
            "WARNING",
        ]
    )


def wait_mongo(cfg: InfraConfig, timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    proc = mongo_process(cfg)
    while True:
        client: MongoClient[dict[str, object]] = MongoClient(
            cfg.mongo_uri, serverSelectionTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return time.monotonic() - started
        except PyMongoError:
            pass
        finally:
            client.close()
        if not proc.running():
            raise InfraError(f"SecantusDB exited during start; log tail:\n{proc.tail()}")
        if time.monotonic() - started > timeout_s:
            raise InfraError(f"SecantusDB not ready after {timeout_s}s; log tail:\n{proc.tail()}")
        time.sleep(0.3)


# --- both ----------------------------------------------------------------------------------


def install() -> None:
    install_kafka()
    install_secantus()


def start(cfg: InfraConfig) -> dict[str, float]:
    """Start both (if not running) and wait until they answer; returns seconds to ready."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    start_kafka(cfg)
    start_mongo(cfg)
    return {"kafka": wait_kafka(cfg), "mongo": wait_mongo(cfg)}


def stop(cfg: InfraConfig) -> None:
    mongo_process(cfg).stop()
    kafka_process(cfg).stop(timeout_s=30.0)


def status(cfg: InfraConfig) -> dict[str, int | None]:
    return {"kafka": kafka_process(cfg).pid(), "secantusdb": mongo_process(cfg).pid()}
