"""`authbus-dev`: set up and run authbus on this machine, no Docker needed.

authbus-dev up              infrastructure + services, in the foreground (Ctrl-C stops all)
authbus-dev up --detach     same, in the background; `authbus-dev down` stops it
authbus-dev up --prometheus also Prometheus on 127.0.0.1:9090, scraping the fleet with the
                            rules of deploy/prometheus/rules (docs/monitoring.md)
authbus-dev infra install   fetch Kafka's jars, SecantusDB, Prometheus and (for the forward-auth
                            test) nginx, each skipped when present
authbus-dev infra start|stop|status
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from authbus_dev import envdoc, infra, nginx, prometheus
from authbus_dev.bringup import BringUp, FleetTable
from authbus_dev.fleet import Fleet, Ports, Service
from authbus_dev.paths import RUNS, VENV_BIN

app = typer.Typer(help=__doc__, no_args_is_help=True)
infra_app = typer.Typer(
    help="The local Kafka broker and MongoDB-wire server.", no_args_is_help=True
)
app.add_typer(infra_app, name="infra")

RunName = Annotated[str, typer.Option(help="Run folder name under .run/.")]
KafkaPort = Annotated[int, typer.Option(envvar="AUTHBUS_DEV_KAFKA_PORT")]
ControllerPort = Annotated[int, typer.Option(envvar="AUTHBUS_DEV_KAFKA_CONTROLLER_PORT")]
MongoPort = Annotated[int, typer.Option(envvar="AUTHBUS_DEV_MONGO_PORT")]
WithPrometheus = Annotated[
    bool, typer.Option("--prometheus", help="Also run Prometheus (127.0.0.1) with the rules.")
]
PrometheusPort = Annotated[int, typer.Option(envvar="AUTHBUS_DEV_PROMETHEUS_PORT")]
DETACHED_WAIT_S = 120.0  # `up --detach` returns by then, slow instances left starting
WATCH_EVERY_S = 0.5


def _config(run: str, kafka_port: int, controller_port: int, mongo_port: int) -> infra.InfraConfig:
    return infra.InfraConfig(
        run_dir=RUNS / run,
        kafka_port=kafka_port,
        controller_port=controller_port,
        mongo_port=mongo_port,
    )


@infra_app.command("install")
def infra_install() -> None:
    """Fetch the Kafka broker's jars (Maven Central) and SecantusDB (PyPI), unless present."""
    started = time.monotonic()
    infra.install()
    typer.echo(f"nginx: {nginx.ensure()}")
    typer.echo(f"prometheus: {prometheus.ensure().root}")
    typer.echo(f"infrastructure installed ({time.monotonic() - started:.1f}s)")


@infra_app.command("start")
def infra_start(
    run: RunName = "local",
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    mongo_port: MongoPort = 27017,
) -> None:
    """Start Kafka and SecantusDB and wait until both answer."""
    cfg = _config(run, kafka_port, controller_port, mongo_port)
    took = infra.start(cfg)
    typer.echo(
        f"kafka ready at {cfg.bootstrap} ({took['kafka']:.1f}s), "
        f"mongo at {cfg.mongo_uri} ({took['mongo']:.1f}s)"
    )


@infra_app.command("wait")
def infra_wait(
    run: RunName = "local",
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    mongo_port: MongoPort = 27017,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each.")] = 90.0,
) -> None:
    """Wait until Kafka lists topics and SecantusDB answers a ping (exit 1 if not in time)."""
    cfg = _config(run, kafka_port, controller_port, mongo_port)
    try:
        kafka = infra.wait_kafka(cfg, timeout)
        mongo = infra.wait_mongo(cfg, timeout)
    except infra.InfraError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"kafka ready ({kafka:.1f}s), mongo ready ({mongo:.1f}s)")


@infra_app.command("stop")
def infra_stop(
    run: RunName = "local",
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    mongo_port: MongoPort = 27017,
) -> None:
    """Stop what `infra start` started (by its recorded pids)."""
    infra.stop(_config(run, kafka_port, controller_port, mongo_port))


@infra_app.command("status")
def infra_status(run: RunName = "local") -> None:
    """Say whether Kafka and SecantusDB of a run folder are running."""
    for name, pid in infra.status(_config(run, 9092, 9093, 27017)).items():
        typer.echo(f"{name}: {'running, pid ' + str(pid) if pid else 'stopped'}")


def _fleet(cfg: infra.InfraConfig, api: int, authz: int, ratelimit: int) -> Fleet:
    counts: dict[Service, int] = {"api": api, "authz": authz, "ratelimit": ratelimit}
    return Fleet(cfg, counts, Ports(), env={"LOG__FORMAT": "console"})


@app.command()
def up(
    api: Annotated[int, typer.Option(help="api instances (ports 8000, 8001, ...)")] = 1,
    authz: Annotated[int, typer.Option(help="authz instances (ops ports 9110, ...)")] = 1,
    ratelimit: Annotated[int, typer.Option(help="ratelimit instances (ops 9120, ...)")] = 1,
    detach: Annotated[bool, typer.Option(help="Leave it running in the background.")] = False,
    run: RunName = "local",
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    mongo_port: MongoPort = 27017,
    with_prometheus: WithPrometheus = False,
    prometheus_port: PrometheusPort = prometheus.DEFAULT_PORT,
) -> None:
    """Start the infrastructure and the services, and print how to make a first request.

    A slow instance is reported and waited for, one that exits is started again (up to three
    times); the healthy ones are never stopped for it (see authbus_dev.bringup)."""
    cfg = _config(run, kafka_port, controller_port, mongo_port)
    fleet = _fleet(cfg, api, authz, ratelimit)
    typer.echo("starting Kafka and SecantusDB ...")
    infra.start(cfg)
    typer.echo("starting the services ...")
    bring = BringUp(FleetTable(fleet), fleet.instances(), report=typer.echo)
    bring.until(lambda: bring.usable or bring.hopeless)
    if bring.hopeless:
        fleet.stop_all()
        typer.echo("error: a service has no instance left running; stopped", err=True)
        raise typer.Exit(1)
    _print_first_request(cfg, fleet)
    if with_prometheus:
        _start_prometheus(fleet, prometheus_port)
    if detach:
        if not bring.until(lambda: bring.settled, timeout_s=DETACHED_WAIT_S):
            typer.echo(f"still starting in the background: {', '.join(bring.pending())}")
        typer.echo(f"running in the background; stop with: {VENV_BIN}/authbus-dev down --run {run}")
        return
    typer.echo("Ctrl-C stops everything.")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        while signal.sigtimedwait({signal.SIGINT, signal.SIGTERM}, WATCH_EVERY_S) is None:
            bring.step()  # instances still starting: report them, start again those that exited
    finally:
        typer.echo("stopping ...")
        prometheus.LocalPrometheus(cfg.run_dir).stop()
        fleet.stop_all()
        infra.stop(cfg)


@app.command()
def down(
    run: RunName = "local",
    kafka_port: KafkaPort = 9092,
    controller_port: ControllerPort = 9093,
    mongo_port: MongoPort = 27017,
) -> None:
    """Stop the services and the infrastructure of a detached `up`."""
    cfg = _config(run, kafka_port, controller_port, mongo_port)
    prometheus.LocalPrometheus(cfg.run_dir).stop()
    _fleet(cfg, 0, 0, 0).stop_recorded()
    infra.stop(cfg)
    typer.echo("stopped")


@app.command("env-example")
def env_example() -> None:
    """Print .env.example, generated from the services' settings classes."""
    typer.echo(envdoc.render(), nl=False)


def _start_prometheus(fleet: Fleet, port: int) -> None:
    """Prometheus on the fleet, its URL printed; the fleet runs on without it if it fails."""
    try:
        url = prometheus.start_for_fleet(fleet, port).url
    except prometheus.PrometheusUnavailable as exc:
        prometheus.LocalPrometheus(fleet.infra.run_dir, port).stop()
        typer.echo(f"error: prometheus not started: {exc}", err=True)
        return
    typer.echo(f"prometheus: {url}  (rules: deploy/prometheus/rules; docs/monitoring.md)\n")


def _print_first_request(cfg: infra.InfraConfig, fleet: Fleet) -> None:
    api = fleet.instances("api")[0]
    admin = Path(os.path.relpath(VENV_BIN / "authbus-admin"))
    lines = [
        "",
        "authbus is up:",
        *(f"  {i.name:<12} {i.url}" for i in fleet.instances()),
        f"  kafka        {cfg.bootstrap}",
        f"  mongodb      {cfg.mongo_uri}  (SecantusDB)",
        f"  logs         {fleet.folder}/",
        "",
        "A first request (in another shell):",
        f"  export AUTHBUS_ADMIN_KAFKA__BOOTSTRAP_SERVERS={cfg.bootstrap}",
        f"  {admin} account create you@example.com",
        f"  TOKEN=$({admin} token create you@example.com --name first)",
        f'  curl -H "Authorization: Bearer $TOKEN" {api.url}/v0/me',
        f"  curl -H 'Accept: application/json' {api.url}/v0/me     # 401, as JSON",
        f"  the OpenAPI docs, in a browser: {api.url}/v0/docs",
        f"  your tokens, keys and 2FA, in a browser: {api.url}/settings",
        "",
    ]
    typer.echo("\n".join(lines))
