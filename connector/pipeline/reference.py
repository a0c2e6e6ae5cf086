"""Step 4: which ticket the message refers to.

The ticket tag in the subject (the `ticket_tag` format, or a scanner rule's
`ticket_match` regex, which only counts when it names an existing ticket)
wins; otherwise In-Reply-To/References naming a Message-ID we sent (verified
by its HMAC) or filed for a ticket.

Reads: the parsed subject and threading headers, the scanner hint
`ticket_match`, the ticket staff named (hint `triage`, `inbound attach`), the tickets and our Message-IDs.
Sets: `ctx.ticket` (the row, when it exists), `ctx.ref_via`;
`plan.ticket_number` (the number named, also when no such ticket exists).
"""

import re

from connector.pipeline.context import VIA_HINT, VIA_REFERENCES, VIA_SUBJECT
from connector.store.filing import ticket_by_number, ticket_number_of_thread

STEP = "reference"
NONE = "none"


def from_subject(ctx):
    pattern = ctx.hints.get("ticket_match")
    regex = re.compile(pattern, re.I) if pattern else ctx.services.tag_re
    match = regex.search(ctx.parsed.subject or "")
    if not match:
        return None
    digits = re.search(r"\d+", match.group(1) if match.groups() else match.group(0))
    return ticket_number(digits.group(0)) if digits else None


def from_references(ctx):
    ids = list(reversed(ctx.parsed.in_reply_to + ctx.parsed.references))
    for message_id in ids:
        number = ctx.services.signer.verify(message_id)
        if number is not None:
            return number
    return ticket_number_of_thread(ids) if ids else None


# The largest number SQLite stores; a subject tag beyond it names no ticket we could have.
MAX_TICKET_NUMBER = 2 ** 63 - 1
TOO_LARGE = MAX_TICKET_NUMBER + 1   # what a longer number reads as: no ticket, never converted


def ticket_number(digits):
    """The number a string of digits names, or TOO_LARGE beyond any ticket: Python refuses
    to convert more than 4,300 digits, and a stranger's subject may carry 5,000."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(MAX_TICKET_NUMBER)) else TOO_LARGE


def find_ticket(number):
    return ticket_by_number(number) if number <= MAX_TICKET_NUMBER else None


def run(ctx):
    forced = (ctx.hints.get("triage") or {}).get("ticket")
    if forced is not None:  # staff attach a triage item to the ticket they name
        ctx.plan.ticket_number, ctx.ref_via, ctx.ticket = forced, VIA_HINT, find_ticket(forced)
        return ctx.record(STEP, VIA_HINT, f"#{forced}")
    number, via = from_subject(ctx), VIA_SUBJECT
    ticket = find_ticket(number) if number is not None else None
    if ticket is None and number is not None and ctx.hints.get("ticket_match"):
        # Seed 003: a rule's own regex links the mail to a ticket only when "such a
        # ticket is found in the system"; a number that is no ticket (an order number,
        # a partner's reference) makes a new ticket, not a triage item.
        number = None
    if number is None:
        number, via = from_references(ctx), VIA_REFERENCES
        ticket = find_ticket(number) if number is not None else None
    if number is None:
        return ctx.record(STEP, NONE, NONE)
    ctx.plan.ticket_number, ctx.ref_via, ctx.ticket = number, via, ticket
    ctx.record(STEP, via, f"#{number}" if ticket else f"#{number}: no such ticket")
