"""`python -m authbus_ratelimit`: build settings, configure logs, run."""

from __future__ import annotations

import uvloop

from authbus_ratelimit.runner import run
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared import logs
from authbus_shared.settings import load


def main() -> None:
    settings = load(RatelimitSettings)
    logs.configure(settings.log, service="ratelimit", instance=settings.instance_id)
    raise SystemExit(uvloop.run(run(settings)))


if __name__ == "__main__":
    main()
