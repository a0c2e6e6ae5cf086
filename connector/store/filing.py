"""The queries the pipeline runs, as functions: what the deciding steps read
(tickets, recipients, threads) and the few writes `apply` and the runner make
beyond their `bulk` inserts. No pipeline module runs SQL itself."""

from connector.store import dialect
from connector.store.models import (
    SPOOL_QUEUED, TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED, Contact, EmployeeRecipient, ExternalRecipient,
    OutboxEntry, Processing, ThreadRef, Ticket, TriageItem, database)


def ticket_by_number(number):
    return Ticket.get_or_none(Ticket.number == number)


def ticket_number_of_thread(message_ids):
    """The number of the ticket one of `message_ids` was filed or sent for, or None."""
    ref = ThreadRef.select(ThreadRef, Ticket).join(Ticket).where(ThreadRef.message_id.in_(message_ids)).first()
    return ref.ticket.number if ref is not None else None


def next_triage_id():
    """The id the next triage item gets: above every item and every deleted one (its
    tombstone), so an id is never given twice. SQLite alone would reuse the id of the
    newest item once it is deleted, and a notice or a mail command naming the deleted
    item would then act on another mail. Two MAX lookups on primary/unique keys."""
    row = database.execute_sql('SELECT MAX("id") FROM "triage"').fetchone()
    tomb = database.execute_sql('SELECT MAX("item_id") FROM "triage_tombstone"').fetchone()
    return max(row[0] or 0, tomb[0] or 0) + 1


def update_ticket(ticket_id, **columns):
    """Write only these columns of the ticket."""
    Ticket.update(**columns).where(Ticket.id == ticket_id).execute()


def contact_email(ticket):
    """The email of the ticket's contact, or None."""
    if ticket.contact_id is None:
        return None
    return Contact.select(Contact.email).where(Contact.id == ticket.contact_id).scalar()


def is_external_recipient(ticket, address):
    return ExternalRecipient.select().where(
        (ExternalRecipient.ticket == ticket) & (ExternalRecipient.address == address)).exists()


def employee_recipients(ticket):
    """Emails of the ticket's Employee Recipients."""
    return [r.email for r in EmployeeRecipient.select(EmployeeRecipient.email).where(EmployeeRecipient.ticket == ticket)]


def external_recipients(ticket):
    """(address, kind) of the ticket's External Recipients, in the order they joined."""
    return [(r.address, r.kind) for r in
            ExternalRecipient.select().where(ExternalRecipient.ticket == ticket).order_by(ExternalRecipient.id)]


def contact_id(address, name, account, now):
    """The id of the contact with `address`, created when unknown (a replay in another
    process may have created it since the pipeline looked)."""
    # two prepared statements, not a peewee query built per new sender (the hot path of a new ticket)
    database.execute_sql(f'{dialect.insert_verb("ignore")} INTO "contact" ("email", "name", "account", '
                         f'"created_at") VALUES (?, ?, ?, ?){dialect.on_conflict("ignore", None, ())}',
                         (address, name, account, now))
    return database.execute_sql('SELECT "id" FROM "contact" WHERE "email" = ?', (address,)).fetchone()[0]


def close_superseded_triage(spool_ids, detail):
    """Close the awaiting triage items of earlier copies now filed with another one."""
    TriageItem.update(status=TRIAGE_CLOSED, detail=detail).where(
        TriageItem.spool_id.in_(spool_ids) & (TriageItem.status == TRIAGE_AWAITING_REVIEW)).execute()


def triage_item_id(spool_id, reason=None, not_reason=None, status=None):
    """The id of the spool entry's newest triage item with `reason` (or any but `not_reason`)
    and `status`, each when given; None when it has none."""
    where, params = ['"spool_id" = ?'], [spool_id]
    for column, operator, value in (("reason", "=", reason), ("reason", "!=", not_reason), ("status", "=", status)):
        if value is not None:
            where.append(f'"{column}" {operator} ?')
            params.append(value)
    row = database.execute_sql(f'SELECT MAX("id") FROM "triage" WHERE {" AND ".join(where)}', params).fetchone()
    return row[0] if row else None


def close_triage(spool_id, reason):
    """Close a spool entry's triage items for `reason` (a replay resolved its processing error)."""
    TriageItem.update(status=TRIAGE_CLOSED).where(
        (TriageItem.spool_id == spool_id) & (TriageItem.reason == reason)).execute()


def forget_sent_before(at):
    """Drop `sent_mail` rows older than `at`: the budgets look back an hour only."""
    database.execute_sql('DELETE FROM "sent_mail" WHERE "at" < ?', (at,))


def processing(spool_id):
    """The entry's processing row (state, action, reason, attempts), or None."""
    return Processing.get_or_none(Processing.spool_id == spool_id)


def requeue(spool_id):
    """Set a processed entry's state back to queued; whether it had a processing row."""
    return Processing.update(state=SPOOL_QUEUED).where(Processing.spool_id == spool_id).execute() == 1


# -- staff commands by mail (connector.pipeline.commands) ---------------------

def triage_item_of_notices(message_ids):
    """The id of the latest triage item whose New Inbound Message Notice was one of
    `message_ids` (the outbox row of a notice names the spool entry it was about), or None."""
    causes = [o.cause_id for o in OutboxEntry.select(OutboxEntry.cause_id)
              .where(OutboxEntry.message_id.in_(message_ids) & OutboxEntry.cause_id.is_null(False))]
    item = (TriageItem.select(TriageItem.id).where(TriageItem.spool_id.in_(causes))
            .order_by(TriageItem.id.desc()).first()) if causes else None
    return item.id if item else None


def ticket_status(ticket_id):
    return Ticket.get_by_id(ticket_id).status


def set_ticket_status(ticket_id, status, now):
    """Set the ticket's status; a status change takes it out of the Inbox (seed 004: a
    ticket moved to another status leaves the Inbox). Whether it was in the Inbox."""
    was_in_inbox = Ticket.get_by_id(ticket_id).in_inbox
    Ticket.update(status=status, in_inbox=False, updated_at=now).where(Ticket.id == ticket_id).execute()
    return was_in_inbox


def savepoint():
    """A savepoint inside the caller's transaction: what ran in it is undone when it raises."""
    return database.atomic()
