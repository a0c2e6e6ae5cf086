"""Retention: drop the raw bytes that the ticket history no longer needs.

`[retention] raw_days` (0 keeps everything, the default). Past that age:
  - the raw spool bytes of a message that was filed (processing `done`) and
    is not waiting in an open triage item; shunted and unprocessed mail is
    never touched, nor is anything an operator may still replay;
  - the body of an outbox row that was delivered (`sent`): its `outbox_body` row
    is deleted (`connector.store.outbox`).
The ticket's text, reply text, headers, recipients and every status stay; the
spool row keeps its size and sha256 (so a re-delivered copy is still
recognised as a duplicate) and its `raw` becomes empty. `message export`
says the bytes were pruned; `outbox retry` and `inbound replay` refuse such
rows. The filing worker calls `prune` a minute after it starts and then
hourly, when it has nothing else to do (`retention.pruned`), while it holds
the `retention` lease (one node at a time: `connector.singletons`), a batch per
transaction, so the intake never waits long for the spool file.
SQLite reuses the freed pages; `connector db vacuum` gives them back to the
file system.
"""

import time

from connector.store import dialect
from connector.store.models import OUTBOX_SENT, SPOOL_DONE, TRIAGE_CLOSED, database

DAY = 86400.0
BATCH = 500
EMPTY = b""


def _prune_batch(sql, params):
    with database.atomic():
        return database.execute_sql(sql, params).rowcount


def prune(raw_days, now=None, batch=BATCH):
    """Prune what is older than `raw_days`; returns {"spool": n, "outbox": n} rows pruned."""
    pruned = {"spool": 0, "outbox": 0}
    if not raw_days:
        return pruned
    cutoff = (now if now is not None else time.time()) - raw_days * DAY
    spool_sql = (
        'UPDATE "spool"."spool" SET "raw" = ? WHERE "id" IN ('
        ' SELECT s."id" FROM "spool"."spool" s JOIN "processing" p ON p."spool_id" = s."id"'
        ' WHERE s."received_at" < ? AND p."state" = ? AND length(s."raw") > 0'
        ' AND NOT EXISTS (SELECT 1 FROM "triage" t WHERE t."spool_id" = s."id" AND t."status" != ?)'
        ' LIMIT ?)')
    outbox_sql = ('DELETE FROM "outbox_body" WHERE "outbox_id" IN (SELECT o."id" FROM "outbox" o'
                  ' JOIN "outbox_body" b ON b."outbox_id" = o."id" WHERE o."status" = ? AND o."sent_at" < ? LIMIT ?)')
    for name, sql, params in (("spool", spool_sql, (EMPTY, cutoff, SPOOL_DONE, TRIAGE_CLOSED, batch)),
                              ("outbox", outbox_sql, (OUTBOX_SENT, cutoff, batch))):
        while True:
            count = _prune_batch(sql, params)
            pruned[name] += count
            if count < batch:
                break
    return pruned


def vacuum():
    """Rewrite both files without their free pages (takes the write lock while it runs)."""
    dialect.vacuum()
