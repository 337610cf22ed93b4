"""The images the compose test needs where no container registry is reachable (issue #11).

- `base_image`: Debian bookworm from `debootstrap --variant=minbase` with CPython 3.11, imported
  with `docker import`. It trusts the CA certificates this machine added locally (copied from
  `/usr/local/share/ca-certificates` at build time, never committed), so PyPI answers inside
  builds. Its tag carries a hash of its inputs: new certificates make a new base.
- `uv_image`: uv's binaries (the ones `scripts/bootstrap.sh` installed) in an image of their own,
  standing in for ghcr.io/astral-sh/uv in the Dockerfile's `UV_IMAGE`.
- `infra_images`: Kafka from the Maven jars, SecantusDB, and Debian's Prometheus and nginx,
  from `tests/compose/infra.Dockerfile`, in place of the registry images docker-compose.yml
  names (apache/kafka, mongo, prom/prometheus, nginx).

Each is skipped when the engine already holds its tag.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from authbus_dev import infra
from authbus_dev.engine import DOCKER, Engine, EngineError
from authbus_dev.paths import CACHE, REPO, RUNS

SUITE = "bookworm"
BASE_PACKAGES = ("python3.11", "ca-certificates")
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
INFRA_DOCKERFILE = REPO / "tests" / "compose" / "infra.Dockerfile"
UV_TAG = "authbus-ci/uv:local"
INFRA_TARGETS = ("kafka", "secantusdb", "prometheus", "nginx")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in [*sources, Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in url:
                return str(url)
    return "http://deb.debian.org/debian"


def _local_cas() -> list[Path]:
    return sorted(LOCAL_CAS.rglob("*.crt")) if LOCAL_CAS.is_dir() else []


def base_image(engine: Engine) -> str:
    """A bookworm image with python3.11 and this machine's trust; built unless present."""
    digest = hashlib.sha256(f"{SUITE} {BASE_PACKAGES}".encode())
    for ca in _local_cas():
        digest.update(ca.read_bytes())
    tag = f"authbus-ci/python:3.11-{SUITE}-{digest.hexdigest()[:12]}"
    if engine.has_image(tag):
        return tag
    rootfs = CACHE / "docker" / "rootfs.partial"
    _remove_rootfs(rootfs)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(rootfs),
            debian_mirror(),
        ],
        "debootstrap",
    )
    target = rootfs / "usr/local/share/ca-certificates"
    for ca in _local_cas():
        shutil.copy2(ca, target / ca.name)
    _run(["chroot", str(rootfs), "update-ca-certificates"], "update-ca-certificates")
    for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):  # debootstrap's downloads
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    _import(engine, rootfs, tag)
    _remove_rootfs(rootfs)
    return tag


def _remove_rootfs(rootfs: Path) -> None:
    """Delete a debootstrap folder, first unmounting what an interrupted run left mounted in
    it (proc, sys): deleting through a mount would reach the host's files."""
    prefix = f"{rootfs.resolve()}/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        _run(["umount", "--lazy", point], f"unmounting {point}")
    shutil.rmtree(rootfs, ignore_errors=True)


def _import(engine: Engine, rootfs: Path, tag: str) -> None:
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        # uv and other clients that bundle their own roots read this bundle instead
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        'CMD ["python3.11"]',
    ]
    argv = [a for c in changes for a in ("--change", c)]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            [DOCKER, "import", *argv, "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=engine.env,
            check=False,
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if result.returncode != 0 or tar.returncode != 0:
        raise EngineError(f"docker import {tag} failed:\n{result.stderr[-3000:]}")


def uv_image(engine: Engine) -> str:
    """uv's two binaries at /uv and /uvx, like the official image."""
    if engine.has_image(UV_TAG):
        return UV_TAG
    uv = Path(infra.uv_binary())
    with tempfile.TemporaryDirectory(prefix="authbus-uv-") as folder:
        context = Path(folder)
        for name in ("uv", "uvx"):
            shutil.copy2(uv.with_name(name), context / name)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY uv uvx /\n")
        engine.docker("build", "--quiet", "-t", UV_TAG, str(context))
    return UV_TAG


def infra_images(engine: Engine, base: str, uv: str) -> dict[str, str]:
    """Kafka, SecantusDB, Prometheus and nginx images; {target: tag}."""
    context = RUNS / "compose" / "infra-context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "kafka").mkdir(parents=True)
    # The broker's jars: hard links when the cache is on the same disk, else copies.
    shutil.copytree(infra.install_kafka(), context / "kafka" / "libs", copy_function=_link)
    for script in (INFRA_DOCKERFILE.parent / "kafka").iterdir():
        shutil.copy2(script, context / "kafka" / script.name)
    (context / "kafka" / "log4j2.properties").write_text(infra.LOG4J2)  # as the local broker's
    versions = {"kafka": infra.KAFKA_VERSION, "secantusdb": infra.SECANTUS_VERSION}
    args = {"BASE": base, "UV_IMAGE": uv, "SECANTUS_VERSION": infra.SECANTUS_VERSION}
    build_args = [a for name, value in args.items() for a in ("--build-arg", f"{name}={value}")]
    tags = {t: f"authbus-ci/{t}:{versions.get(t, SUITE)}" for t in INFRA_TARGETS}

    def build(target: str) -> None:
        dockerfile = ["-f", str(INFRA_DOCKERFILE), "--target", target, "-t", tags[target]]
        engine.docker("build", "--quiet", *dockerfile, *build_args, str(context))

    # At once: their time is mostly apt's downloads and unpacking, one image each.
    with ThreadPoolExecutor(max_workers=len(INFRA_TARGETS)) as pool:
        list(pool.map(build, INFRA_TARGETS))
    shutil.rmtree(context, ignore_errors=True)
    return tags


def _link(src: str, dst: str) -> str:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EngineError(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}")
