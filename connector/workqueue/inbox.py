"""Inboxes and their entries (seed 001): where a ticket waits, who owns it.

CONTRACT (the inbox work fills these in; the triage actions and staff mail
commands call them; every function runs in the caller's transaction, writes
one ticket event (`connector.store.events`) and one log line, and raises
`Refused` without changing anything):

    place_new_ticket(ticket_id, *, delivered_to, inbox=None, by, via, now) -> entry id | None
    add(ticket_number, inbox, *, by, via, now, due_type=None, due_at=None, message=None) -> entry id
    entry_for(ticket_number, *, by) -> InboxEntry   (the open entry a staff mail command acts on)
    take(entry_id, *, by, via, now, force=False)
    complete(entry_id, *, by, via, now)
    cancel(entry_id, *, by, via, now, message=None)
    forward(entry_id, *, to, due_type, due_at, by, via, now, message=None) -> new entry id
"""


def place_new_ticket(ticket_id, *, delivered_to, inbox=None, by, via, now):
    """An open entry for a new ticket: the inbox whose address it was sent to, else
    `inbox` (a scanner rule's `assign_inbox`), else `default_inbox`, else none."""
    return None
