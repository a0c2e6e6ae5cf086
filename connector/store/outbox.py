"""Outbox rows and their bodies: how an outgoing mail is queued and how its bytes are read.

The filing worker (`connector.pipeline.apply`) and the deadline timer
(`connector.workqueue.auto_emails`) queue a mail with `queue`: its row in
`outbox` (envelope, status, per-recipient state) and its bytes in
`outbox_body`, in the caller's transaction. Delivery reads the due rows
without the bytes and `sendable` reads them once, just before it sends
(`connector.outbound.delivery`); each attempt then updates the small row
only. `[retention] raw_days` deletes the bodies of mail sent long ago
(`connector.store.retention`): `body` is then b"" ("pruned").
"""

from connector.store import bulk
from connector.store.models import OUTBOX_ACTIVE, OutboxBody, OutboxEntry, database

_SENDABLE = ('SELECT b."raw" FROM "outbox" o LEFT JOIN "outbox_body" b ON b."outbox_id" = o."id" '
             'WHERE o."id" = ? AND o."status" IN (%s)' % ", ".join("?" * len(OUTBOX_ACTIVE)))


class DueRow:
    """What delivery reads of a due outbox row (DUE_FIELDS), without its mail: built with far
    less work than an OutboxEntry of every column, for every row delivery attempts."""

    __slots__ = ("id", "ticket_id", "kind", "mail_from", "rcpt", "message_id", "attempts", "created_at",
                 "queued_at", "recipients")

    def __init__(self, id, ticket, kind, mail_from, rcpt, message_id, attempts, created_at, queued_at,
                 recipients):
        self.id, self.ticket_id, self.kind, self.mail_from, self.rcpt = id, ticket, kind, mail_from, rcpt
        self.message_id, self.attempts, self.created_at = message_id, attempts, created_at
        self.queued_at, self.recipients = queued_at, recipients


DUE_FIELDS = tuple(OutboxEntry._meta.fields[name] for name in (
    "id", "ticket", "kind", "mail_from", "rcpt", "message_id", "attempts", "created_at", "queued_at", "recipients"))
_DUE = ('SELECT %s FROM "outbox" WHERE "status" IN (%s) AND "next_attempt_at" <= ? ORDER BY "next_attempt_at", "id" '
        'LIMIT ?' % (", ".join('"%s"' % f.column_name for f in DUE_FIELDS), ", ".join("?" * len(OUTBOX_ACTIVE))))
_JSON = {"rcpt", "recipients"}   # the other columns are read as they are stored


def due_row(row):
    """A DueRow of the values of DUE_FIELDS, as SQL returns them."""
    return DueRow(*(f.python_value(v) if f.name in _JSON else v for f, v in zip(DUE_FIELDS, row)))


def due(now, limit):
    """The outbox rows to attempt at `now`, oldest due first, without their mail (DueRow)."""
    return [due_row(row) for row in database.execute_sql(_DUE, (*OUTBOX_ACTIVE, now, limit)).fetchall()]


def queue(row, or_ignore=False):
    """Insert one outbox row (a dict of OutboxEntry's fields plus `raw`, the mail) and its body;
    returns the row's id, or None when `or_ignore` and its unique `auto_key` was queued before."""
    row = dict(row)
    raw = row.pop("raw")
    outbox_id = bulk.insert(OutboxEntry, or_ignore=or_ignore, **row)
    if outbox_id is not None:
        bulk.insert(OutboxBody, outbox_id=outbox_id, raw=raw)
    return outbox_id


def queue_many(rows):
    """`queue` each of `rows`; their ids."""
    return [queue(row) for row in rows]


def body(outbox_id):
    """The mail of an outbox row: b"" when pruned ([retention] raw_days) or there is none."""
    row = database.execute_sql('SELECT "raw" FROM "outbox_body" WHERE "outbox_id" = ?', (outbox_id,)).fetchone()
    return bytes(row[0]) if row else b""


def sendable(outbox_id):
    """(whether the outbox row is still to be delivered: not cancelled, nor done by another
    since delivery read it due; its mail, None when it has none), in one look."""
    row = database.execute_sql(_SENDABLE, (outbox_id, *OUTBOX_ACTIVE)).fetchone()
    if row is None:
        return False, None
    return True, None if row[0] is None else bytes(row[0])
