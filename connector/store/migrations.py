"""Schema migrations: an existing store upgrades and keeps its data.

`open_store` calls `upgrade(db)` before it creates missing tables. Each
migration has a name and a function; they run once each, in list order, and
the names applied are recorded in the `schema_migration` table, so two lines
of work that each add a migration merge by appending to `MIGRATIONS`.

A migration must be safe on a store whose tables do not exist yet (a new
store: `create_tables` then makes them with every column) and on one where
its change is already there: use `add_column`, which does nothing in both
cases. The models stay the one description of the schema; a migration only
brings an older file up to them. The same list runs on SQLite and PostgreSQL:
a migration's SQL is portable, or goes through `connector.store.dialect`
(`add_column` does; a new PostgreSQL database is made at the latest schema,
every migration recorded as applied, like a new SQLite file).
"""

import json
import time

from connector.store import dialect

TABLE = "schema_migration"
_columns = dialect.columns


def add_column(db, table, column, definition, schema=None):
    """`ALTER TABLE table ADD COLUMN column definition` unless the table is missing or has it."""
    columns = _columns(db, table, schema)
    if not columns or column in columns:
        return
    prefix = f'"{schema}".' if schema else ""
    db.execute_sql(f'ALTER TABLE {prefix}"{table}" ADD COLUMN "{column}" {dialect.column_type(db, definition)}')


def _baseline(db):
    """The schema as released before migrations existed: nothing to change."""


def _outbox_recipient_state(db):
    """Per-recipient delivery state, and the time a retried row's give-up clock restarts from."""
    add_column(db, "outbox", "recipients", "TEXT")
    add_column(db, "outbox", "queued_at", "REAL")


def _processing_processed_at_index(db):
    """`/metrics` counts the messages filed since its last scrape by `processing.processed_at`."""
    if _columns(db, "processing"):
        db.execute_sql('CREATE INDEX IF NOT EXISTS "processing_processed_at" ON "processing" ("processed_at")')


def _sent_mail(db, clock=time.time):
    """Budgets count `sent_mail` rows, no longer JSON text in the outbox: the old
    query compared json.dumps([address]) with a column written with
    ensure_ascii=False, so a non-ASCII address was never limited. Carry the
    last hour over, so an upgrade does not reset the limits."""
    from connector.store.models import SentMail
    if not _columns(db, "outbox"):
        return  # a new store: create_tables makes sent_mail
    db.execute_sql('DROP INDEX IF EXISTS "outbox_kind_to_created_at"')
    SentMail.create_table(safe=True)
    rows = db.execute_sql(
        'SELECT t."number", o."kind", o."rcpt", o."created_at" FROM "outbox" o '
        'LEFT JOIN "ticket" t ON t."id" = o."ticket_id" WHERE o."created_at" > ?', (clock() - 3600,)).fetchall()
    carried = [
        {"address": address.lower(), "domain": address.rpartition("@")[2].lower(), "ticket": number,
         "kind": kind, "budgeted": kind != "distribution", "at": at}
        for number, kind, rcpt, at in rows for address in json.loads(rcpt or "[]")]
    if carried:
        SentMail.insert_many(carried).execute()


def _ticket_events_and_inboxes(db):
    """Ticket history (`tickets history`) and inbox entries (seed 001): new tables only."""
    from connector.store.models import InboxEntry, TicketEvent
    if not _columns(db, "ticket"):
        return  # a new store: create_tables makes them
    TicketEvent.create_table(safe=True)
    InboxEntry.create_table(safe=True)


def _triage_tombstones(db):
    """What `inbound delete` leaves of a deleted triage item: a new table only."""
    from connector.store.models import TriageTombstone
    if not _columns(db, "triage"):
        return  # a new store: create_tables makes it
    TriageTombstone.create_table(safe=True)


def _auto_emails(db):
    """Auto-emails (seed 002): the outbox key that makes one mail per (event, recipient), and
    the due date whose deadline has fired on an inbox entry."""
    add_column(db, "outbox", "auto_key", "TEXT")
    if _columns(db, "outbox"):
        db.execute_sql('CREATE UNIQUE INDEX IF NOT EXISTS "outboxentry_auto_key" ON "outbox" ("auto_key")')
    add_column(db, "inbox_entry", "deadline_fired", "REAL")


def _blocks(db):
    """Blocks of automatic mail (issue 12): a new table, and the outbox's `blocked` note."""
    from connector.store.models import Block
    add_column(db, "outbox", "blocked", "TEXT")
    if _columns(db, "outbox"):  # an existing store (a new one: create_tables makes it)
        Block.create_table(safe=True)


def _nodes(db):
    """The nodes' heartbeats (`connector nodes`, issue 13): a new table only."""
    from connector.store.models import Node
    if _columns(db, "ticket"):  # an existing store (a new one: create_tables makes it)
        Node.create_table(safe=True)


def _leases(db):
    """Singletons' leases (one IMAP scanner, deadline timer, pruner at a time; issue 13): a new table only."""
    from connector.store.models import Lease
    if _columns(db, "ticket"):  # an existing store (a new one: create_tables makes it)
        Lease.create_table(safe=True)


def _claims(db):
    """Work shared by several nodes on PostgreSQL (issue 13): who filed a mail, who claims,
    claimed and sent an outgoing one, and the filing workers' claims (a new table)."""
    from connector.store.models import FilingClaim
    add_column(db, "processing", "node", "TEXT")
    for column, definition in (("claimed_by", "TEXT"), ("claim_token", "TEXT"), ("claimed_until", "REAL"),
                               ("sent_by", "TEXT")):
        add_column(db, "outbox", column, definition)
    if _columns(db, "ticket"):  # an existing store (a new one: create_tables makes it)
        FilingClaim.create_table(safe=True)


# Indexes that nothing reads: Message-IDs are looked up in thread_ref and processing, never in
# message; each (ticket, ...) unique or composite index already serves lookups by ticket.
UNUSED_INDEXES = ("message_message_id", "externalrecipient_ticket_id", "employeerecipient_ticket_id",
                  "ticketevent_ticket_id")


def _fewer_indexes(db):
    """Drop UNUSED_INDEXES: every filed message wrote a page of each (about a tenth of the
    pages its commit wrote), and none was read (issue 14)."""
    for name in UNUSED_INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


def _outbox_bodies(db):
    """Outgoing mail's bytes move from `outbox.raw` to their own table, `outbox_body` (issue 14):
    delivery's status update of a row rewrote the mail's pages with it. Every body is kept
    (a pruned one, b"", is not carried: it stays pruned), then the column is dropped."""
    from connector.store.models import OutboxBody
    if "raw" not in _columns(db, "outbox"):
        return  # a new store (create_tables makes outbox_body), or moved already
    OutboxBody.create_table(safe=True)
    db.execute_sql('INSERT INTO "outbox_body" ("outbox_id", "raw") SELECT "id", "raw" FROM "outbox" '
                   'WHERE length("raw") > 0')
    db.execute_sql('ALTER TABLE "outbox" DROP COLUMN "raw"')


def _delivery_attempt_index(db):
    """Drop the index of `deliveryattempt.outbox_id`: each delivery commit wrote a page of it,
    and nothing looks attempts up by their row (`/metrics` reads them by id; issue 14)."""
    db.execute_sql('DROP INDEX IF EXISTS "deliveryattempt_outbox_id"')


def _store_key(db):
    """The fingerprint of the key the store's mail is signed with (a new table only): a
    node started without the others' hmac.key refuses to start instead of refusing their bounces."""
    from connector.store.models import StoreKey
    if _columns(db, "ticket"):  # an existing store (a new one: create_tables makes it)
        StoreKey.create_table(safe=True)


def _node_run(db):
    """The run id of a node's daemon beside its pid: a restart is told from another daemon by it."""
    add_column(db, "node", "run", "TEXT")


# (name, function(db)), oldest first. Append; never reorder, rename or remove.
# The numbers were reserved by parallel lines of work: a gap (0006) is no missing step,
# names are what is recorded and matched.
MIGRATIONS = (
    ("0001_baseline", _baseline),
    ("0002_outbox_recipient_state", _outbox_recipient_state),
    ("0003_processing_processed_at_index", _processing_processed_at_index),
    ("0004_sent_mail", _sent_mail),
    ("0005_ticket_events_and_inboxes", _ticket_events_and_inboxes),
    ("0007_triage_tombstones", _triage_tombstones),
    ("0009_auto_emails", _auto_emails),
    ("0010_blocks", _blocks),
    ("0013_nodes", _nodes),
    ("0013_leases", _leases),
    ("0014_claims", _claims),
    ("0015_fewer_indexes", _fewer_indexes),
    ("0016_outbox_bodies", _outbox_bodies),
    ("0016_delivery_attempt_index", _delivery_attempt_index),
    ("0018_store_key", _store_key),
    ("0019_node_run", _node_run),
)


def applied(db):
    db.execute_sql(f'CREATE TABLE IF NOT EXISTS "{TABLE}" ("name" TEXT PRIMARY KEY, '
                   f'"applied_at" {dialect.column_type(db, "REAL")} NOT NULL)')
    return {row[0] for row in db.execute_sql(f'SELECT "name" FROM "{TABLE}"').fetchall()}


def status(db):
    """{version, latest, pending}: how many migrations are applied, how many exist, which are not.
    Reads only: a store without the table (written before migrations existed) has none applied."""
    exists = db.table_exists(TABLE)
    done = {row[0] for row in db.execute_sql(f'SELECT "name" FROM "{TABLE}"').fetchall()} if exists else set()
    pending = [name for name, _ in MIGRATIONS if name not in done]
    return {"version": len(MIGRATIONS) - len(pending), "latest": len(MIGRATIONS), "pending": pending}


def upgrade(db, clock=time.time):
    """Apply every pending migration in one transaction; returns the names applied."""
    done = applied(db)
    ran = []
    for name, migrate in MIGRATIONS:
        if name in done:
            continue
        migrate(db)
        db.execute_sql(f'INSERT INTO "{TABLE}" ("name", "applied_at") VALUES (?, ?)', (name, clock()))
        ran.append(name)
    return ran

