"""Which storage errors are the machine's, not the message's.

A full disk, a database another writer keeps locked past the busy timeout,
an I/O error: the same write succeeds once the fault is gone, so the
pipeline retries the message with backoff instead of shunting it (see
`connector.pipeline.runner`). SQLite rolls a transaction back by itself on
some of them (SQLITE_FULL, SQLITE_IOERR), and peewee's own ROLLBACK then
raises `cannot rollback - no transaction is active`, which hides the cause:
`transient_fault` looks through the exceptions an error was raised over and
returns the real one. On PostgreSQL, every OperationalError of psycopg is the
server's or the network's (unreachable, restarting, shutting down, too many
connections, serialization), never the message's; so is a connection that
closed under us (InterfaceError).
"""

import errno
import sqlite3
import sys

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


def _pg_transient():
    """psycopg's transient classes, when it is loaded (it is not on SQLite: no import cost)."""
    psycopg = sys.modules.get("psycopg")
    return (psycopg.OperationalError, psycopg.InterfaceError) if psycopg else ()


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
    pg_transient = _pg_transient()
    for error in reversed(chain):  # the innermost is the cause
        if isinstance(error, pg_transient):
            return error
        text = str(error).lower()
        if isinstance(error, SQL_ERRORS) and any(m in text for m in TRANSIENT_MESSAGES):
            return error
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return error
    return None


def describe(error):
    return f"{type(error).__name__}: {error}"
