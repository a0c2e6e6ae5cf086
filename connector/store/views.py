"""What the operator commands read: one function per view, so the SQL of
`tickets`, `inbound`, `inbox`, `message export` and `outbox retry|cancel`
lives in the store like the pipeline's (`filing.py`) and the lists'
(`queries.py`). Each returns rows or plain values; the commands format them.
"""

import peewee

from connector.store import outbox
from connector.store.models import (
    INBOUND, EmployeeRecipient, ExternalRecipient, InboxEntry, Message, OutboxEntry, Processing, SpoolEntry, Ticket,
    TriageItem)


# -- tickets ------------------------------------------------------------------

def message_count(ticket_id):
    return Message.select().where(Message.ticket == ticket_id).count()


def ticket_recipients(ticket_id):
    """([{address, kind}], [employee email]) in the order they joined."""
    external = [{"address": r.address, "kind": r.kind} for r in
                ExternalRecipient.select().where(ExternalRecipient.ticket == ticket_id).order_by(ExternalRecipient.id)]
    employees = [r.email for r in
                 EmployeeRecipient.select().where(EmployeeRecipient.ticket == ticket_id).order_by(EmployeeRecipient.id)]
    return external, employees


def ticket_messages(ticket_id):
    return list(Message.select().where(Message.ticket == ticket_id).order_by(Message.received_at, Message.id))


def latest_inbound_reply(ticket_id):
    """The reply text of the ticket's latest inbound message, or None."""
    latest = (Message.select(Message.reply_text)
              .where((Message.ticket == ticket_id) & (Message.direction == INBOUND))
              .order_by(Message.received_at.desc(), Message.id.desc()).first())
    return latest.reply_text if latest else None


def original_bytes(kind, row_id):
    """(raw bytes, spool sha256) of a spool entry, an outbox row or a filed message (`kind`:
    spool | outbox | message); raw is None when there is no such row, b'' when pruned or deleted."""
    if kind == "spool":
        entry = SpoolEntry.get_or_none(SpoolEntry.id == row_id)
        return (bytes(entry.raw), entry.sha256) if entry else (None, None)
    if kind == "outbox":
        entry = OutboxEntry.get_or_none(OutboxEntry.id == row_id)
        return (outbox.body(entry.id), None) if entry else (None, None)
    message = Message.get_or_none(Message.id == row_id)
    if message is None:
        return None, None
    if message.spool_id:
        entry = SpoolEntry.get_or_none(SpoolEntry.id == message.spool_id)
        return (bytes(entry.raw), entry.sha256) if entry else (None, None)
    out = OutboxEntry.get_or_none(OutboxEntry.message_id == message.message_id)
    return (outbox.body(out.id), None) if out else (None, None)


# -- triage -------------------------------------------------------------------

def _triage_query():
    """Triage items with the node that filed (or shunted) their mail (attribute `filed_by`)."""
    return (TriageItem.select(TriageItem, Processing.node.alias("filed_by"))
            .join(Processing, peewee.JOIN.LEFT_OUTER, on=(Processing.spool_id == TriageItem.spool_id)).objects())


def triage_items(status=None):
    query = _triage_query().order_by(TriageItem.id)
    return list(query.where(TriageItem.status == status) if status else query)


def triage_item(item_id):
    return _triage_query().where(TriageItem.id == item_id).first()


def spool_raw_kept(spool_id):
    """Whether the spool entry still has its bytes (False: pruned or deleted; None: no entry)."""
    entry = SpoolEntry.get_or_none(SpoolEntry.id == spool_id)
    return None if entry is None else bool(len(entry.raw or b""))


def actions_of(spool_ids):
    """What processing made of these spool entries: [(action or state)]."""
    return [row.action or row.state for row in Processing.select().where(Processing.spool_id.in_(spool_ids))]


# -- inboxes ------------------------------------------------------------------

def inbox_entries(where=None, order=None, limit=None):
    """Entries with their ticket's number and subject (attributes `number`, `subject`), in one query."""
    query = (InboxEntry.select(InboxEntry, Ticket.number.alias("number"), Ticket.subject.alias("subject"))
             .join(Ticket, on=(InboxEntry.ticket == Ticket.id)).order_by(*(order or (InboxEntry.id,))))
    if where is not None:
        query = query.where(where)
    if limit is not None:
        query = query.limit(limit)
    return list(query.objects())


def inbox_links(ticket_id):
    """{entry id: the entry it was forwarded from} for every entry of the ticket."""
    return {e.id: e.forwarded_from for e in
            InboxEntry.select(InboxEntry.id, InboxEntry.forwarded_from).where(InboxEntry.ticket == ticket_id)}


# -- outbox -------------------------------------------------------------------

def outbox_row(entry_id):
    return OutboxEntry.get_or_none(OutboxEntry.id == entry_id)


def change_outbox_row(entry_id, statuses, **changes):
    """Update the row only while its status is one of `statuses`; whether it changed."""
    return bool(OutboxEntry.update(**changes)
                .where((OutboxEntry.id == entry_id) & OutboxEntry.status.in_(list(statuses))).execute())
