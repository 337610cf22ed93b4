"""Fault injection for the fault tests (never set in production): a process that dies at the
worst moment, as a power cut or SIGKILL would kill it.

`crash_after_commit(command)` returns the hook the handlers call right after a command's unit
of work commits and before its events are published: for the named command it ends the
process at once (`os._exit`: no cleanup, no flush, no goodbye), leaving a committed change
whose events only the outbox holds (ADR 0015). Empty name: a hook that does nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

CRASH_EXIT_CODE = 86


def crash_after_commit(command: str) -> Callable[[str], None]:
    def after_commit(committed: str) -> None:
        if command and committed == command:
            sys.stderr.write(f"fault injected: exiting after the commit of {committed}\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)

    return after_commit
