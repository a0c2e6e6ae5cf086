"""Which storage errors are the machine's, not the message's.

A full disk, a database another writer keeps locked past the busy timeout,
an I/O error: the same write succeeds once the fault is gone, so the
pipeline retries the message with backoff instead of shunting it (see
`connector.pipeline.runner`). SQLite rolls a transaction back by itself on
some of them (SQLITE_FULL, SQLITE_IOERR), and peewee's own ROLLBACK then
raises `cannot rollback - no transaction is active`, which hides the cause:
`transient_fault` looks through the exceptions an error was raised over and
returns the real one.
"""

import errno
import sqlite3

import peewee

TRANSIENT_MESSAGES = (
    "database or disk is full",
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
)
TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.ENOMEM}
SQL_ERRORS = (sqlite3.OperationalError, peewee.OperationalError)


def _chain(exc):
    """`exc` and the exceptions it was raised from or while handling, outermost first."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def transient_fault(exc):
    """The storage fault behind `exc` when retrying later can succeed, else None."""
    chain = _chain(exc)
    for error in reversed(chain):  # the innermost is the cause
        text = str(error).lower()
        if isinstance(error, SQL_ERRORS) and any(m in text for m in TRANSIENT_MESSAGES):
            return error
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return error
    return None


def describe(error):
    return f"{type(error).__name__}: {error}"
