"""Cheap figures from the store, for `connector status`, `/metrics` and `/healthz`
(`connector.health` judges and serves them; the SQL lives here, with the store's).

Every query walks an index or the rowid, never the whole spool or outbox:

- spool backlog: entries above the highest processed spool id (the rowid,
  walked from there), entries in the BACKLOG_WINDOW ids below it that have no
  processing row (the worker files in id order, so a hole further down
  cannot stay), and entries a replay queued again (index on state);
- outbox: the rows of each status but `sent`, found by skip-scanning the
  status index; the oldest waiting row by its created_at;
- what `/metrics` counts: the rows added since its last scrape (`marks`,
  `added_since`), by id or by the index on processing.processed_at.
"""

from connector.store import dialect
from connector.store.models import (
    OUTBOX_ACTIVE, OUTBOX_FAILED, OUTBOX_SENT, SPOOL_DONE, SPOOL_QUEUED, SPOOL_SHUNTED, TRIAGE_NEEDS_ATTENTION,
    database)

BACKLOG_WINDOW = 10000
WAITING = OUTBOX_ACTIVE


def _row(sql, params=()):
    return database.execute_sql(sql, params).fetchone()


def spool_backlog(now):
    """{unfiled, oldest_unfiled_age}: spooled messages the worker has not filed yet."""
    top = _row('SELECT MAX("spool_id") FROM "processing"')[0] or 0
    counts = [
        _row('SELECT COUNT(*), MIN("id") FROM "spool"."spool" WHERE "id" > ?', (top,)),
        _row('SELECT COUNT(*), MIN(s."id") FROM "spool"."spool" s WHERE s."id" > ? AND s."id" <= ? '
             'AND NOT EXISTS (SELECT 1 FROM "processing" p WHERE p."spool_id" = s."id")',
             (top - BACKLOG_WINDOW, top)),
        _row('SELECT COUNT(*), MIN("spool_id") FROM "processing" WHERE "state" = ?', (SPOOL_QUEUED,)),
    ]
    firsts = [first for _, first in counts if first is not None]
    oldest = _row('SELECT "received_at" FROM "spool"."spool" WHERE "id" = ?', (min(firsts),))[0] if firsts else None
    return {"unfiled": sum(count for count, _ in counts),
            "oldest_unfiled_age": _age(now, oldest)}


def shunted():
    """Messages whose processing raised, waiting for an operator (`inbound list`)."""
    return _row('SELECT COUNT(*) FROM "processing" WHERE "state" = ?', (SPOOL_SHUNTED,))[0]


def needs_attention(reason):
    """Messages whose processing failed (triage `reason`), not yet replayed or closed. Not the
    items staff marked `needs_attention` themselves (`inbound status`): helpdesk work, no alarm."""
    return _row('SELECT COUNT(*) FROM "triage" WHERE "status" = ? AND "reason" = ?',
                (TRIAGE_NEEDS_ATTENTION, reason))[0]


def outbox_statuses():
    """The distinct statuses in the outbox, each found with one index seek."""
    rows = database.execute_sql(
        'WITH RECURSIVE s(v) AS (SELECT MIN("status") FROM "outbox" UNION ALL '
        'SELECT (SELECT MIN("status") FROM "outbox" WHERE "status" > s.v) FROM s WHERE s.v IS NOT NULL) '
        'SELECT v FROM s WHERE v IS NOT NULL').fetchall()
    return [row[0] for row in rows]


def outbox(now):
    """{pending, deferred, failed, oldest_pending_age, by_status}; `sent` is never counted.

    pending counts every row still to be delivered; deferred those of them
    that were tried and wait for a retry.
    """
    by_status = {status: _row('SELECT COUNT(*) FROM "outbox" WHERE "status" = ?', (status,))[0]
                 for status in outbox_statuses() if status != OUTBOX_SENT}
    marks = ", ".join("?" * len(WAITING))
    waiting, oldest, tried = _row(
        f'SELECT COUNT(*), MIN(COALESCE("queued_at", "created_at")), SUM(CASE WHEN "attempts" > 0 THEN 1 ELSE 0 END) FROM "outbox" WHERE "status" IN ({marks})',
        WAITING)
    return {"pending": waiting, "deferred": tried or 0, "failed": by_status.get(OUTBOX_FAILED, 0),
            "oldest_pending_age": _age(now, oldest), "by_status": by_status}


def scanners():
    """Each IMAP scanner that ran here: last success and last error (the scanners' own table)."""
    if not database.table_exists("scanner_status"):
        return []
    rows = database.execute_sql('SELECT "scanner", "last_success", "last_error", "last_error_at" '
                                'FROM "scanner_status" ORDER BY "scanner"').fetchall()
    return [{"name": name, "last_success": success,
             "last_error": {"text": error, "at": error_at} if error else None}
            for name, success, error, error_at in rows]


def _age(now, then):
    return None if then is None else round(max(now - then, 0.0), 3)


def marks():
    """Where `/metrics` starts counting: the highest spool, triage and attempt ids, the latest filing."""
    return {
        "spool": _row('SELECT MAX("id") FROM "spool"."spool"')[0] or 0,
        "processed_at": _row('SELECT MAX("processed_at") FROM "processing"')[0] or 0.0,
        "triage": _row('SELECT MAX("id") FROM "triage"')[0] or 0,
        "attempt": _row('SELECT MAX("id") FROM "deliveryattempt"')[0] or 0,
    }


def added_since(marks):
    """{spool: [(id, intake)], processed: [(processed_at, state, action, latency)],
    triage: [(id, reason)], attempts: [(id, ok)]}: the rows since `marks`."""
    state = dialect.unindexed('p."state"')  # SQLite: walk processed_at's index, not state's
    return {
        "spool": _rows('SELECT "id", "intake" FROM "spool"."spool" WHERE "id" > ?', (marks["spool"],)),
        "processed": _rows(
            'SELECT p."processed_at", p."state", p."action", p."processed_at" - s."received_at" '
            'FROM "processing" p JOIN "spool"."spool" s ON s."id" = p."spool_id" '
            f'WHERE p."processed_at" > ? AND {state} IN (?, ?)', (marks["processed_at"], SPOOL_DONE, SPOOL_SHUNTED)),
        "triage": _rows('SELECT "id", "reason" FROM "triage" WHERE "id" > ?', (marks["triage"],)),
        "attempts": _rows('SELECT "id", "ok" FROM "deliveryattempt" WHERE "id" > ?', (marks["attempt"],)),
    }


def _rows(sql, params=()):
    return database.execute_sql(sql, params).fetchall()
