"""Tombstones of deleted triage items (`connector inbound delete`, seed 000: spam
and phishing): the raw bytes are gone, the tombstone says what the mail was.

Read by the classify step (the same mail delivered again is a duplicate: kept,
never triaged again, no notice) and by `message export` (says it was deleted).
The same mail is the same bytes, or the same Message-ID from the same sender:
a copy relayed again carries new Received lines, so its bytes differ.
"""

from datetime import datetime, timezone

from connector.store.models import TriageTombstone


def matching(message_id, from_addr, sha256):
    """The tombstone of a deleted mail this one is the same as, or None."""
    same = TriageTombstone.sha256 == sha256
    if message_id:
        same |= (TriageTombstone.message_id == message_id) & (TriageTombstone.from_addr == (from_addr or ""))
    return TriageTombstone.select().where(same).order_by(TriageTombstone.id).first()


def for_spool(spool_id):
    """The tombstone whose mail was this spool entry, or None."""
    return TriageTombstone.get_or_none(TriageTombstone.spool_id == spool_id)


def describe(tombstone):
    """One line: which item, by whom, when (for logs, `message export`, duplicate reasons)."""
    when = datetime.fromtimestamp(tombstone.deleted_at, timezone.utc).isoformat(timespec="seconds")
    return f"inbound item {tombstone.item_id} was deleted by {tombstone.deleted_by} at {when}"
