"""Read queries on the processing path, as plain SQL (see `bulk` for why)."""

from connector.store.models import SPOOL_DONE, SPOOL_QUEUED, Contact, SpoolEntry, database

DUPLICATE = "duplicate"
SENT_COLUMNS = {"address", "domain", "ticket", "kind", "budgeted"}
SPOOL_FIELDS = SpoolEntry._meta.sorted_fields
SPOOL_SELECT = 'SELECT %s FROM "spool"."spool"' % ", ".join('"%s"' % f.column_name for f in SPOOL_FIELDS)


def _one(sql, params=()):
    row = database.execute_sql(sql, params).fetchone()
    return row[0] if row else None


def next_ticket_number():
    return (_one('SELECT MAX("number") FROM "ticket"') or 0) + 1


def processing_state(spool_id):
    """'done', 'shunted', 'queued' (replay asked for), or None (never processed)."""
    return _one('SELECT "state" FROM "processing" WHERE "spool_id" = ?', (spool_id,))


def find_duplicate(message_id, sha256, spool_id=None):
    """The spool id of a processed message with the same Message-ID and bytes (not itself a duplicate)."""
    return _one('SELECT "spool_id" FROM "processing" WHERE "message_id" = ? AND "sha256" = ? AND "state" = ? '
                'AND "action" != ? AND "spool_id" != ? LIMIT 1',
                (message_id, sha256, SPOOL_DONE, DUPLICATE, spool_id if spool_id is not None else -1))


def unprocessed_spool_ids(floor, limit):
    """Spool ids from `floor` on with no processing row, or one asking for a replay."""
    rows = database.execute_sql(
        'SELECT s."id" FROM "spool"."spool" s LEFT JOIN "processing" p ON p."spool_id" = s."id" '
        'WHERE s."id" >= ? AND (p."spool_id" IS NULL OR p."state" = ?) ORDER BY s."id" LIMIT ?',
        (floor, SPOOL_QUEUED, limit)).fetchall()
    return [row[0] for row in rows]


def requeued_spool_ids(limit):
    rows = database.execute_sql('SELECT "spool_id" FROM "processing" WHERE "state" = ? ORDER BY "spool_id" LIMIT ?',
                                (SPOOL_QUEUED, limit)).fetchall()
    return [row[0] for row in rows]


def contact_by_email(address):
    row = database.execute_sql('SELECT "id", "email", "name", "account", "created_at" FROM "contact" '
                               'WHERE "email" = ?', (address,)).fetchone()
    return Contact(id=row[0], email=row[1], name=row[2], account=row[3], created_at=row[4]) if row else None


def spool_entry(spool_id):
    row = database.execute_sql(SPOOL_SELECT + ' WHERE "id" = ?', (spool_id,)).fetchone()
    if row is None:
        return None
    return SpoolEntry(**{f.name: f.python_value(v) for f, v in zip(SPOOL_FIELDS, row)})


def sent_since(since, **columns):
    """How many `sent_mail` rows since the time `since` match `columns` (address, domain,
    ticket, kind, budgeted): the loop and flood budgets, each an indexed COUNT."""
    assert set(columns) <= SENT_COLUMNS, columns
    where = "".join(f' AND "{name}" = ?' for name in columns)
    return _one(f'SELECT COUNT(*) FROM "sent_mail" WHERE "at" > ?{where}', (since, *columns.values()))


def same_text_since(ticket_number, from_addr, text, since):
    """Whether `from_addr` already wrote `text` on the ticket since `since` (an out-of-office repeats itself)."""
    return _one('SELECT 1 FROM "message" m JOIN "ticket" t ON t."id" = m."ticket_id" WHERE t."number" = ? '
                'AND m."direction" = ? AND m."from_addr" = ? AND m."received_at" > ? AND m."reply_text" = ? LIMIT 1',
                (ticket_number, "in", from_addr, since, text)) is not None
