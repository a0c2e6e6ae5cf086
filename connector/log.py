"""Structured logs: one event per decision, with a stable name.

JSON lines when stdout is not a terminal (journald, files), readable console
output when it is. Bind `spool_id`/`message_id` with `bind_message` so every
line about a message carries them.

Nothing a stranger wrote reaches a terminal as a control sequence: the console
renderer and the commands' output (`connector.commands.common`) show control
characters as `\u001b` escapes (`printable`); JSON lines escape them anyway.
"""

import logging
import os
from json import JSONEncoder
import re
import sys
from datetime import datetime, timezone

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# control characters but tab and newline, and the bidirectional overrides and isolates
# (U+202A-202E, U+2066-2069) that make "gpj.exe" show as "exe.jpg"
TERMINAL_CONTROLS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def iso(timestamp):
    """Epoch seconds as ISO 8601 in UTC with its offset, as the commands, `status` and the
    notices print them; None stays None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def printable(text):
    """`text` safe for a terminal: control characters (ESC, CR, C1...) as \\uXXXX escapes,
    which also stay valid inside a JSON string."""
    return TERMINAL_CONTROLS_RE.sub(lambda m: "\\u%04x" % ord(m.group(0)), text)


def _printable_values(logger, method, event):
    """structlog processor for the console renderer: no raw control characters in any value."""
    return {key: printable(value) if isinstance(value, str) else value for key, value in event.items()}


class LineWriter:
    """structlog's logger: each event is one line written with one write(2), so the lines of
    the daemon and its children, which share stdout, never interleave (a pipe keeps writes
    up to 4 KiB whole; a file's shared offset moves per write). `stream` None is whatever
    sys.stdout is when the line is written; a stream closed meanwhile falls back to it."""

    def __init__(self, stream=None):
        self.stream = stream

    def msg(self, message):
        stream = self.stream if self.stream is not None and not self.stream.closed else sys.stdout
        data = (message + "\n").encode("utf-8", "backslashreplace")
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # a stream with no file (a test's capture)
            stream.write(data.decode("utf-8"))
            stream.flush()
            return
        stream.flush()   # anything the process printed before goes first
        while data:
            data = data[os.write(fd, data):]

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


def _json_line(event, default):
    """json.dumps(event, default=default) with one encoder kept: json.dumps given a `default`
    builds a new encoder for every line (a third of a line's cost); the same text."""
    encoder = _ENCODERS.get(default)
    if encoder is None:
        encoder = _ENCODERS[default] = JSONEncoder(default=default)
    return encoder.encode(event)


_ENCODERS = {}


def setup_logging(level="info", stream=None, json=None, node=None):
    """`node` (`[node] name`) goes on every line, so the lines of several nodes can be told apart."""
    if json is None:
        json = not (stream or sys.stdout).isatty()
    processors = [
        structlog.contextvars.merge_contextvars,
        *([lambda logger, method, event: {"node": node, **event}] if node else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer(serializer=_json_line))
    else:
        processors += [_printable_values, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=lambda *args: LineWriter(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name=None):
    return structlog.get_logger(name) if name else structlog.get_logger()


bind_message = structlog.contextvars.bind_contextvars
clear_message = structlog.contextvars.clear_contextvars
