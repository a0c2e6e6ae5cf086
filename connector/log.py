"""Structured logs: one event per decision, with a stable name.

JSON lines when stdout is not a terminal (journald, files), readable console
output when it is. Bind `spool_id`/`message_id` with `bind_message` so every
line about a message carries them.
"""

import logging
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(level="info", stream=None, json=None):
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=processors + [renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name=None):
    return structlog.get_logger(name) if name else structlog.get_logger()


bind_message = structlog.contextvars.bind_contextvars
clear_message = structlog.contextvars.clear_contextvars
