"""`python -m authbus_authz`: build settings, configure logs, run."""

from __future__ import annotations

import uvloop

from authbus_authz.runner import run
from authbus_authz.settings import AuthzSettings
from authbus_shared import logs
from authbus_shared.settings import load


def main() -> None:
    settings = load(AuthzSettings)
    logs.configure(settings.log, service="authz", instance=settings.instance_id)
    raise SystemExit(uvloop.run(run(settings)))


if __name__ == "__main__":
    main()
