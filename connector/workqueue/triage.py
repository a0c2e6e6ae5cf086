"""Triage actions (seed 000): what staff do with an inbound message that
could not be routed.

CONTRACT (the triage work fills these in; the CLI `connector inbound ...` and
staff mail commands replying to a New Inbound Message Notice call them; same
rules as `connector.workqueue.inbox`):

    create_ticket(item_id, *, by, via, now, quiet=False) -> ticket number
    attach(item_id, ticket_number, *, by, via, now, internal=False, add_recipient=False, quiet=False)
    close(item_id, *, by, via, now)
    set_status(item_id, status, *, by, via, now)
    delete(item_id, *, by, via, now)        (tombstone kept: id, Message-ID, From, subject, sha256, who, when)
"""
