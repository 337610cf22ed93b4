"""Structured logs: one JSON object per line on stdout (or readable lines for people).

Library logs (aiokafka, pymongo, uvicorn) go through the same renderer. Never log a raw secret:
log ids and hashes (SPEC A9).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog
from aiokafka.errors import KafkaError

from authbus_shared.settings import LogSettings


def configure(
    settings: LogSettings, *, service: str, instance: str, stream: TextIO = sys.stdout
) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RetriedByAiokafka())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # aiokafka is chatty at INFO about every (re)connection and rebalance step.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("pymongo").setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, instance=instance)


class RetriedByAiokafka(logging.Filter):
    """aiokafka logs at ERROR some failures it retries by itself: the group coordinator not
    there yet while the broker starts, a refused connection, a metadata update that failed.
    Those are warnings (the service goes on, and counts what lasts); an error that is not
    retriable stays an error."""

    RETRIED = frozenset(
        {
            'Unable connect to "%s:%s": %s',
            "Unable connect to node with id %s: %s",
            "Unable to update metadata from %s",
            "Heartbeat send request failed: %s. Will retry.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka"):
            args = record.args if isinstance(record.args, tuple) else ()
            retriable = any(isinstance(a, KafkaError) and a.retriable for a in args)
            if retriable or (isinstance(record.msg, str) and record.msg in self.RETRIED):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _dumps(obj: object, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()
