# The authbus images: one Dockerfile, one target per service (api, authz, ratelimit).
# Build from the repo root (the build needs uv.lock, the root pyproject.toml and libs/shared):
#   docker build --target api -t authbus/api .        # or authz, ratelimit
# or just `docker compose build`, which builds all three from here.
#
# Build arguments (the defaults are for real deployments):
#   PYTHON_IMAGE  the base of every stage; needs CPython 3.11 as `python3.11` on PATH.
#                 The compose test builds from a Debian bookworm base of its own
#                 (tests/compose/, no registry is reachable there).
#   UV_IMAGE      where the uv binary comes from (/uv, /uvx), as in uv's Docker guide.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- build: the locked dependencies of one package into /app/.venv ------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Third-party dependencies first, from the manifests alone: the layer is rebuilt only when the
# lock or a manifest changes. With --frozen uv takes the lock as it is.
COPY pyproject.toml uv.lock ./
COPY libs/shared/pyproject.toml libs/shared/
COPY services/api/pyproject.toml services/api/
COPY services/authz/pyproject.toml services/authz/
COPY services/ratelimit/pyproject.toml services/ratelimit/
COPY tools/dev/pyproject.toml tools/dev/

# ---- runtime: the venv only (no uv, no sources), run as an unprivileged user ---------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 authbus \
    && useradd --system --uid 10001 --gid authbus --no-create-home --shell /usr/sbin/nologin authbus
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Each service's liveness probe runs `python -c "$HEALTH_PROBE" <its /healthz URL>` (compose swaps
# in readiness, /readyz). `python` is the venv's, so the probe works on any base.
ENV HEALTH_PROBE="import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"
USER authbus

# ---- the three services: each installs only its own package and what it needs ------------------
# The venv keeps its build path: the console scripts' shebangs point at /app/.venv/bin/python.

FROM build AS build-api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package authbus-api
COPY libs/shared libs/shared
COPY services/api services/api
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package authbus-api

# The HTTP edge: the API and its /metrics, /healthz, /readyz on one port (AUTHBUS_API_PORT).
FROM runtime AS api
COPY --from=build-api /app/.venv /app/.venv
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "$HEALTH_PROBE" "http://127.0.0.1:${AUTHBUS_API_PORT:-8000}/healthz"
CMD ["authbus-api"]

FROM build AS build-authz
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package authbus-authz
COPY libs/shared libs/shared
COPY services/authz services/authz
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package authbus-authz

# Credentials (MongoDB), and the operators' CLI, authbus-admin. Ops endpoint: /metrics, /healthz,
# /readyz on AUTHBUS_AUTHZ_OPS__PORT.
FROM runtime AS authz
COPY --from=build-authz /app/.venv /app/.venv
EXPOSE 9101
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "$HEALTH_PROBE" "http://127.0.0.1:${AUTHBUS_AUTHZ_OPS__PORT:-9101}/healthz"
CMD ["authbus-authz"]

FROM build AS build-ratelimit
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package authbus-ratelimit
COPY libs/shared libs/shared
COPY services/ratelimit services/ratelimit
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package authbus-ratelimit

# The rate-limit counters. Ops endpoint on AUTHBUS_RATELIMIT_OPS__PORT.
FROM runtime AS ratelimit
COPY --from=build-ratelimit /app/.venv /app/.venv
EXPOSE 9102
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "$HEALTH_PROBE" "http://127.0.0.1:${AUTHBUS_RATELIMIT_OPS__PORT:-9102}/healthz"
CMD ["authbus-ratelimit"]
