"""Structured logs: one event per decision, with a stable name.

JSON lines when stdout is not a terminal (journald, files), readable console
output when it is. Bind `spool_id`/`message_id` with `bind_message` so every
line about a message carries them.

Nothing a stranger wrote reaches a terminal as a control sequence: the console
renderer and the commands' output (`connector.commands.common`) show control
characters as `\u001b` escapes (`printable`); JSON lines escape them anyway.
"""

import logging
import re
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
TERMINAL_CONTROLS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")   # all but tab and newline


def printable(text):
    """`text` safe for a terminal: control characters (ESC, CR, C1...) as \\uXXXX escapes,
    which also stay valid inside a JSON string."""
    return TERMINAL_CONTROLS_RE.sub(lambda m: "\\u%04x" % ord(m.group(0)), text)


def _printable_values(logger, method, event):
    """structlog processor for the console renderer: no raw control characters in any value."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in event.items()}


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
    if json:
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors += [_printable_values, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name=None):
    return structlog.get_logger(name) if name else structlog.get_logger()


bind_message = structlog.contextvars.bind_contextvars
clear_message = structlog.contextvars.clear_contextvars
