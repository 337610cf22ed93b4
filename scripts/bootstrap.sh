#!/usr/bin/env bash
# Installs what the Python side needs, into gitignored caches, skipping what is already there:
#   .cache/uv/   a private uv (from PyPI), so the machine needs nothing but python3.11
#   .venv/       the workspace: the three services, the shared library, dev tools (uv.lock)
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"
UV_HOME=".cache/uv"
UV="$UV_HOME/bin/uv"
PYTHON="${AUTHBUS_PYTHON:-python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: $PYTHON not found; authbus needs CPython 3.11 (set AUTHBUS_PYTHON)" >&2
  exit 1
fi

if [ ! -x "$UV" ] || [ "$("$UV" --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into $UV_HOME"
  rm -rf "$UV_HOME"
  "$PYTHON" -m venv "$UV_HOME"
  "$UV_HOME/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

export UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR="$PWD/.cache/uv-cache"
"$UV" sync --frozen --all-packages --python "$PYTHON" --quiet
