"""Ticket events: the audit trail of `tickets history`, and what automatic
e-mails are planned from (seed 002).

Every state change of a ticket writes one event here, in the same
transaction as the change, whatever the channel: a mail (`via` mail), an
operator command (cli), a scanner rule (scanner) or the daemon itself
(system, e.g. a deadline). Event names are public (JSON, logs, auto_emails.yaml).
"""

from connector.store import bulk
from connector.store.models import TicketEvent

# What happened (issue texts and seed 002).
TICKET_CREATED = "ticket_created"        # any channel
REQUEST_BY_EMAIL = "request_by_email"    # a new ticket from a mail
CUSTOMER_REPLIED = "customer_replied"
EMPLOYEE_REPLIED = "employee_replied"    # public or internal: `detail.public`
STATUS_CHANGED = "status_changed"        # detail: {from, to}
MANAGER_CHANGED = "manager_changed"      # detail: {from, to}
INBOX_FLAG_CHANGED = "inbox_flag_changed"  # detail: {in_inbox}
INBOX_ADDED = "inbox_added"              # an open entry made in an inbox (detail: entry, inbox)
TICKET_TAKEN = "ticket_taken"
TICKET_FORWARDED = "ticket_forwarded"
TICKET_COMPLETED = "ticket_completed"
TICKET_CANCELLED = "ticket_cancelled"
TRIAGE_ATTACHED = "triage_attached"      # a triage item filed into this ticket
NOTE_ADDED = "note_added"
DEADLINE_PASSED = "deadline_passed"
TICKET_ESCALATED = "ticket_escalated"
DELIVERY_FAILED = "delivery_failed"

# Through which channel.
VIA_MAIL = "mail"
VIA_CLI = "cli"
VIA_SCANNER = "scanner"
VIA_SYSTEM = "system"
VIAS = (VIA_MAIL, VIA_CLI, VIA_SCANNER, VIA_SYSTEM)


def via_of_intake(intake):
    """The channel of a spooled message's intake (`imap:<scanner>` is a scanner, `cli` the CLI)."""
    if intake == "cli":  # `tickets note|reply` spool a mail the pipeline files
        return VIA_CLI
    return VIA_SCANNER if (intake or "").startswith("imap:") else VIA_MAIL


# What runs after an event is written, in its transaction: the process's wiring
# installs the auto-email planner (connector.workqueue.auto_emails) here, so the
# store imports nothing above it. The pipeline plans the auto-emails of the events
# a mail writes itself (so `replay --dry-run` shows them) and records them `planned`.
_after_record = []


def on_record(listener):
    """Call `listener(TicketEvent)` after every event this process records (once per listener)."""
    if listener not in _after_record:
        _after_record.append(listener)


def record(ticket_id, event, *, at, by=None, via=VIA_SYSTEM, detail=None, planned=False):
    """Write one event (the caller holds the transaction of the change); returns its id.
    `planned`: the caller planned the event's automatic mail itself (no listener is called)."""
    assert via in VIAS, via
    detail = detail or {}
    event_id = bulk.insert(TicketEvent, ticket=ticket_id, at=at, event=event, by=by, via=via, detail=detail)
    for listener in () if planned else _after_record:
        listener(TicketEvent(id=event_id, ticket=ticket_id, at=at, event=event, by=by, via=via, detail=detail))
    return event_id


def history(ticket_id):
    """The ticket's events, oldest first (ties in the order they were written)."""
    return list(TicketEvent.select().where(TicketEvent.ticket == ticket_id)
                .order_by(TicketEvent.at, TicketEvent.id))
