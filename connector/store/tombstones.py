"""Tombstones of deleted triage items (`connector inbound delete`, seed 000: spam
and phishing): the raw bytes are gone, the tombstone says what the mail was.

Read by the classify step (the same mail delivered again is a duplicate: kept,
never triaged again, no notice) and by `message export` (says it was deleted).
The same mail is the same bytes, or the same Message-ID from the same sender:
a copy relayed again carries new Received lines, so its bytes differ.
"""

from datetime import datetime, timezone

from connector.store.models import TriageTombstone, database


# Plain SQL, built once: every message asks (see `connector.store.bulk` for why);
# each term is an indexed lookup (sha256; message_id), and MIN of the two takes no sort (an
# OR with ORDER BY built a temporary b-tree for every mail: 42 us of CPU, 19 us so).
_MATCH = ('SELECT MIN("id") FROM (SELECT MIN("id") AS "id" FROM "triage_tombstone" WHERE "sha256" = ? '
          'UNION ALL SELECT MIN("id") FROM "triage_tombstone" WHERE "message_id" = ? AND "message_id" != \'\' '
          'AND "from_addr" = ?) AS "found"')


def matching(message_id, from_addr, sha256):
    """The tombstone of a deleted mail this one is the same as, or None."""
    row = database.execute_sql(_MATCH, (sha256, message_id or "", from_addr or "")).fetchone()
    return TriageTombstone.get_by_id(row[0]) if row and row[0] is not None else None


def describe(tombstone):
    """One line: which item, by whom, when (for logs, `message export`, duplicate reasons)."""
    when = datetime.fromtimestamp(tombstone.deleted_at, timezone.utc).isoformat(timespec="seconds")
    return f"inbound item {tombstone.item_id} was deleted by {tombstone.deleted_by} at {when}"
