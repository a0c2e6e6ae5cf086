"""Deadlines of inbox entries (seeds 001, 002): `deadline_passed`, then escalation.

Where it stands: the filing worker calls `fire_due` from its loop when it has
nothing else to do, at most every DEADLINE_EVERY seconds, while it holds the
`deadlines` lease (one node at a time: `connector.singletons`). An open entry whose
`due_at` has passed fires `deadline_passed` once for that due date: one
conditional UPDATE sets `deadline_fired` to the due date, in the same
transaction as the event, so two processes never both fire it, and a new due
date (a forward sets one) can fire again. The event's auto-emails go to the
inbox the entry is in (`connector.workqueue.auto_emails`); then, when the
inbox has `escalate_to`, the entry moves there (`inbox.escalate`,
`ticket_escalated`, whose mails go to the new inbox).
"""

from connector.log import get_logger
from connector.store import events
from connector.store.models import ENTRY_OPEN, InboxEntry, database
from connector.workqueue import inbox
from connector.workqueue.errors import Refused
from connector.log import iso

log = get_logger("deadline")

DEADLINE_EVERY = 1.0   # seconds between two looks for overdue entries
BATCH = 100            # entries fired per look


def _not_fired():
    return InboxEntry.deadline_fired.is_null() | (InboxEntry.deadline_fired != InboxEntry.due_at)


def overdue(now, limit=BATCH):
    """Open entries whose due date has passed and has not fired yet, oldest due first."""
    return list(InboxEntry.select().where((InboxEntry.status == ENTRY_OPEN) & (InboxEntry.due_at <= now)
                                          & _not_fired())
                .order_by(InboxEntry.due_at, InboxEntry.id).limit(limit))


def fire(entry, *, now, settings=None):
    """Fire `entry`'s deadline (and escalate it) in one transaction; False when another process
    fired it, or it changed, first."""
    with database.atomic():
        claimed = (InboxEntry.update(deadline_fired=entry.due_at)
                   .where((InboxEntry.id == entry.id) & (InboxEntry.status == ENTRY_OPEN)
                          & (InboxEntry.due_at == entry.due_at) & _not_fired()).execute())
        if claimed != 1:
            return False
        events.record(entry.ticket_id, events.DEADLINE_PASSED, at=now, via=events.VIA_SYSTEM,
                      detail={"entry": entry.id, "inbox": entry.inbox, "due_type": entry.due_type,
                              "due_at": iso(entry.due_at), "owner": entry.owner})
        log.info("deadline.passed", ticket_id=entry.ticket_id, entry=entry.id, inbox=entry.inbox,
                 due_at=iso(entry.due_at))
        configured = inbox.config_of(settings).get(entry.inbox)
        if configured is not None and configured.escalate_to:
            try:
                with database.atomic():
                    inbox.escalate(entry.id, now=now, settings=settings)
            except Refused as exc:
                log.warning("deadline.not_escalated", ticket_id=entry.ticket_id, entry=entry.id,
                            to=configured.escalate_to, reason=str(exc))
    return True


def fire_due(now, settings=None):
    """Fire every overdue entry's deadline; returns how many fired."""
    return sum(fire(entry, now=now, settings=settings) for entry in overdue(now))
