"""`python -m authbus_api`: build settings, configure logs, run."""

from __future__ import annotations

import uvloop

from authbus_api.runner import run
from authbus_api.settings import ApiSettings
from authbus_shared import logs
from authbus_shared.settings import load


def main() -> None:
    settings = load(ApiSettings)
    logs.configure(settings.log, service="api", instance=settings.instance_id)
    raise SystemExit(uvloop.run(run(settings)))


if __name__ == "__main__":
    main()
