"""Read queries on the processing path, as plain SQL (see `bulk` for why)."""

import contextlib
import fcntl
import json
import os
from collections import namedtuple
from pathlib import Path

import peewee

from connector.store import dialect
from connector.store.models import (
    AUTO_RESPONSE, DISTRIBUTION, NOTICE, SPOOL_DONE, SPOOL_QUEUED, Contact, Message, OutboxEntry, SpoolEntry, Ticket,
    database)

DUPLICATE = "duplicate"
SENT_COLUMNS = {"address", "domain", "ticket", "kind", "budgeted"}
FILING_LOCK = "filing.lock"  # beside the database: the filing processes take turns on it


def _one(sql, params=()):
    row = database.execute_sql(sql, params).fetchone()
    return row[0] if row else None


next_ticket_number = dialect.next_ticket_number
ticket_number_free = dialect.ticket_number_free


def processing_state(spool_id):
    """'done', 'shunted', 'queued' (replay asked for), or None (never processed)."""
    return _one('SELECT "state" FROM "processing" WHERE "spool_id" = ?', (spool_id,))


Copy = namedtuple("Copy", "spool_id action reason rcpt_to")


def filed_copies(message_id, sha256, spool_id=None):
    """Earlier processed copies of a message (same Message-ID and bytes, not themselves
    duplicates), oldest first, as `Copy` tuples. An MTA that delivers
    one copy per recipient, or retries after a lost 250, leaves several."""
    rows = database.execute_sql(
        'SELECT p."spool_id", p."action", p."reason", s."rcpt_to" FROM "processing" p '
        'JOIN "spool"."spool" s ON s."id" = p."spool_id" WHERE p."message_id" = ? AND p."sha256" = ? '
        'AND p."state" = ? AND p."action" != ? AND p."spool_id" != ? ORDER BY p."spool_id"',
        (message_id, sha256, SPOOL_DONE, DUPLICATE, spool_id if spool_id is not None else -1)).fetchall()
    return [Copy(row[0], row[1], row[2], json.loads(row[3] or "[]")) for row in rows]


def _share(column, partition):
    """The SQL condition and parameters selecting filing process I of N's share, (I, N)."""
    if partition is None:
        return "", ()
    index, count = partition
    return f' AND {column} % ? = ?', (count, index - 1)


def unprocessed_spool_ids(floor, limit, partition=None):
    """Spool ids from `floor` on with no processing row, or one asking for a replay
    (of `partition` (I, N) only: the ids whose remainder modulo N is I - 1)."""
    share, params = _share('s."id"', partition)
    rows = database.execute_sql(
        'SELECT s."id" FROM "spool"."spool" s LEFT JOIN "processing" p ON p."spool_id" = s."id" '
        f'WHERE s."id" >= ? AND (p."spool_id" IS NULL OR p."state" = ?){share} ORDER BY s."id" LIMIT ?',
        (floor, SPOOL_QUEUED, *params, limit)).fetchall()
    return [row[0] for row in rows]


def first_unfiled(floor):
    """The lowest spool id from `floor` on that no process has filed yet (None: there is none)."""
    return _one('SELECT s."id" FROM "spool"."spool" s LEFT JOIN "processing" p ON p."spool_id" = s."id" '
                'WHERE s."id" >= ? AND p."spool_id" IS NULL ORDER BY s."id" LIMIT 1', (floor,))


def last_sent_id():
    """The newest `sent_mail` row's id (0: none): where a decision's view of the budgets ends."""
    return _one('SELECT MAX("id") FROM "sent_mail"') or 0


def sent_after(mark, at_most):
    """How many `sent_mail` rows were written after the row `mark`, counting no further than `at_most`."""
    return _one('SELECT COUNT(*) FROM (SELECT 1 FROM "sent_mail" WHERE "id" > ? LIMIT ?) AS "recent"', (mark, at_most))


def ticket_updated_at(ticket_id):
    return _one('SELECT "updated_at" FROM "ticket" WHERE "id" = ?', (ticket_id,))


def last_spool_id():
    """The highest spool id committed so far (0 for an empty spool); an index lookup."""
    return _one('SELECT MAX("id") FROM "spool"."spool"') or 0


_lock_files = {}


@contextlib.contextmanager
def _filing_turn():
    """The filing processes' turn (an flock on FILING_LOCK): a waiting worker is woken the
    moment the other one commits, where SQLite's busy handler sleeps 1, 2, 5... ms between
    looks. Released by the kernel when a process dies. Without the file (a read-only
    folder): SQLite's own lock alone. PostgreSQL: its advisory lock alone (no file)."""
    if dialect.is_postgres():
        yield
        return
    path = Path(database.database).parent / FILING_LOCK
    fd = _lock_files.get(path)
    if fd is None:
        try:
            fd = _lock_files[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            yield
            return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def filing_transaction(spool_id):
    """The transaction that files one spool entry, holding the write lock of the main file only
    (and the filing processes' turn, `_filing_turn`, taken first).

    `BEGIN IMMEDIATE` would write-lock every attached file, the spool included,
    so each filing would make the intake's spool commit wait. A deferred
    transaction whose first statement writes to the main file takes only that
    file's lock, and, being a write from the start, waits for it through the
    busy timeout instead of failing with "database is locked" as a transaction
    that read first would.
    """
    with _filing_turn(), database.atomic():
        dialect.lock_writes()
        yield


@contextlib.contextmanager
def write_transaction():
    """A transaction that holds the main file's write lock from its first statement, and
    not the spool's (see `filing_transaction`): for the operator actions (inbox, triage,
    `tickets set`), which read, decide and write, so two of them, or one and the worker,
    take turns instead of racing, and the intake never waits for them."""
    with database.atomic():
        dialect.lock_writes()
        yield


def requeued_spool_ids(limit, partition=None):
    share, params = _share('"spool_id"', partition)
    rows = database.execute_sql(f'SELECT "spool_id" FROM "processing" WHERE "state" = ?{share} '
                                'ORDER BY "spool_id" LIMIT ?', (SPOOL_QUEUED, *params, limit)).fetchall()
    return [row[0] for row in rows]


def contact_by_email(address):
    row = database.execute_sql('SELECT "id", "email", "name", "account", "created_at" FROM "contact" '
                               'WHERE "email" = ?', (address,)).fetchone()
    return Contact(id=row[0], email=row[1], name=row[2], account=row[3], created_at=row[4]) if row else None


def _select(model):
    """`SELECT every column FROM model's table`, and the fields in that order."""
    fields = model._meta.sorted_fields
    table = f'"{model._meta.schema}"."{model._meta.table_name}"' if model._meta.schema else \
        f'"{model._meta.table_name}"'
    return "SELECT %s FROM %s" % (", ".join('"%s"' % f.column_name for f in fields), table), fields


def _instance(model, fields, row):
    return model(**{f.name: f.python_value(v) for f, v in zip(fields, row)})


SPOOL_SELECT, SPOOL_FIELDS = _select(SpoolEntry)


def spool_entry(spool_id):
    row = database.execute_sql(SPOOL_SELECT + ' WHERE "id" = ?', (spool_id,)).fetchone()
    return None if row is None else _instance(SpoolEntry, SPOOL_FIELDS, row)


_WITH_STATE_SQL = ('SELECT %s, p."state" FROM "spool"."spool" s LEFT JOIN "processing" p ON p."spool_id" = s."id" '
                   'WHERE s."id" = ?' % ", ".join('s."%s"' % f.column_name for f in SPOOL_FIELDS))


def spool_entry_and_state(spool_id):
    """(the spool entry or None, its `processing_state`), in one query: the filing path's first look."""
    row = database.execute_sql(_WITH_STATE_SQL, (spool_id,)).fetchone()
    return (None, None) if row is None else (_instance(SpoolEntry, SPOOL_FIELDS, row[:-1]), row[-1])


def sent_since(since, at_most=None, **columns):
    """How many `sent_mail` rows since the time `since` match `columns` (address, domain,
    ticket, kind, budgeted), counting no further than `at_most` (None: all): the loop and
    flood budgets, each an indexed COUNT whose cost is bounded by its limit, not by how
    much was sent."""
    assert set(columns) <= SENT_COLUMNS, columns
    where = "".join(f' AND "{name}" = ?' for name in columns)
    limit = "" if at_most is None else f" LIMIT {int(at_most)}"
    return _one(f'SELECT COUNT(*) FROM (SELECT 1 FROM "sent_mail" WHERE "at" > ?{where}{limit}) AS s',
                (since, *columns.values()))


def answerable_since(since, address, ticket):
    """Whether we sent `address` a mail of `ticket` since `since` that a robot answering it
    would make a loop of: a copy, an auto-response, a notice, the automatic mail of a mail
    (`budgeted`); not an auto-email about a person's action (`#take`, the CLI, a deadline) nor
    the receipt of their commands (an employee's quick next mail after `#take` answers neither)."""
    return _one('SELECT 1 FROM "sent_mail" WHERE "at" > ? AND "address" = ? AND "ticket" = ? '
                'AND ("budgeted" OR "kind" IN (?, ?, ?)) LIMIT 1',
                (since, address, ticket, AUTO_RESPONSE, DISTRIBUTION, NOTICE)) is not None


def same_text_since(ticket_number, from_addr, text, since):
    """Whether `from_addr` already wrote `text` on the ticket since `since` (an out-of-office repeats itself)."""
    return _one('SELECT 1 FROM "message" m JOIN "ticket" t ON t."id" = m."ticket_id" WHERE t."number" = ? '
                'AND m."direction" = ? AND m."from_addr" = ? AND m."received_at" > ? AND m."reply_text" = ? LIMIT 1',
                (ticket_number, "in", from_addr, since, text)) is not None


def ticket_page(in_inbox=None, status=None, since=None, after=0, limit=None):
    """Tickets by number after `after`, with their message count and contact email, in one query.

    Returns (ticket, message_count, contact_email) triples; filters are ANDed.
    """
    count = (Message.select(peewee.fn.COUNT(Message.id)).where(Message.ticket == Ticket.id))
    query = (Ticket.select(Ticket, count.alias("message_count"), Contact.email.alias("contact_email"))
             .join(Contact, peewee.JOIN.LEFT_OUTER, on=(Ticket.contact == Contact.id))
             .where(Ticket.number > (after or 0)).order_by(Ticket.number))
    if in_inbox is not None:
        query = query.where(Ticket.in_inbox == in_inbox)
    if status:
        query = query.where(Ticket.status == status)
    if since is not None:
        query = query.where(Ticket.updated_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [(t, t.message_count, t.contact_email) for t in query.objects()]


def outbox_page(status=None, after=0, limit=None):
    """(outbox row without its body, ticket number) pairs by id after `after`, in one query."""
    columns = [f for f in OutboxEntry._meta.sorted_fields if f.name != "raw"]
    query = (OutboxEntry.select(*columns, Ticket.number.alias("ticket_number"))
             .join(Ticket, peewee.JOIN.LEFT_OUTER, on=(OutboxEntry.ticket == Ticket.id))
             .where(OutboxEntry.id > (after or 0)).order_by(OutboxEntry.id))
    if status:
        query = query.where(OutboxEntry.status == status)
    if limit is not None:
        query = query.limit(limit)
    return [(o, o.ticket_number) for o in query.objects()]
