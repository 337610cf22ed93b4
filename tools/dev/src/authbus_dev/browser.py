"""A real browser for the tests: Debian's chromium, driven by Playwright for Python (which
brings its own driver in its wheel; its own browser download is never used: the build machines
cannot fetch it). `chromium()` installs the package with apt (as root) unless it is there.

`LAUNCH_ARGS` keep chromium off the network except for what a page asks for: no background
services, sync, component updates or QUIC, which this machine's closed network refuses.
"""

from __future__ import annotations

from pathlib import Path

from authbus_dev import apt

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = (
    "--no-sandbox",  # root in CI; the page under test is our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(RuntimeError):
    """No chromium, and it cannot be installed here; the message says why."""


def chromium() -> Path:
    """Debian's chromium, installed with apt unless it is there (a failed install raises)."""
    if not CHROMIUM.exists():
        try:
            apt.install(["chromium"])
        except apt.NotRoot as exc:
            raise BrowserUnavailable(str(exc)) from None
    return CHROMIUM
