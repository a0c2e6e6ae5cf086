"""Step 5: the decision. Seed 004 (customer / employee correspondence, internal
mail, public flag) and seed 000 (what cannot be routed goes to triage).

    to the notifications address only          -> triage notifications_address
    automatic, ticket known, sender associated -> follow_up, filed, not distributed
    automatic otherwise                        -> ignored_automatic (kept, listed closed)
    reference to a ticket that does not exist  -> triage unknown_ticket
    reference, employee                        -> follow_up, or internal (keyword / not in To)
    reference, external recipient or contact   -> follow_up (public), internal with keyword
    reference, anybody else                    -> triage unknown_sender (never append a stranger)
    no reference, employee                     -> triage staff_without_ticket
    no reference, anybody else                 -> new_ticket
"""

from connector.pipeline.context import (
    CONTACT_ONLY, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, R_CC_ONLY, R_CUSTOMER,
    R_EMPLOYEE, R_KEYWORD, R_NEW, R_NOTIFICATIONS, R_STAFF_NO_TICKET, R_UNKNOWN_SENDER,
    R_UNKNOWN_TICKET, TRIAGE)
from connector.store.models import TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED, ExternalRecipient
from connector.store.queries import next_ticket_number


def addressed_to_notifications_only(ctx):
    services, spool = ctx.services, ctx.spool
    rcpts = spool.rcpt_to or (ctx.parsed.to + ctx.parsed.cc)
    return any(services.is_notifications(a) for a in rcpts) and \
        not any(services.is_public(a) for a in rcpts)


def has_keyword(ctx):
    keyword = ctx.services.settings.internal_keyword
    return bool(keyword) and keyword.lower() in (ctx.parsed.subject or "").lower()


def associated(ctx):
    """The sender is the ticket's contact or one of its external recipients."""
    ticket, address = ctx.ticket, ctx.sender.address
    if ticket.contact_id is not None and ticket.contact.email == address:
        return True
    return ExternalRecipient.select().where(
        (ExternalRecipient.ticket == ticket) & (ExternalRecipient.address == address)).exists()


def triage(ctx, reason, status=TRIAGE_AWAITING_REVIEW):
    ctx.finish(TRIAGE, reason, triage_status=status, distribute=False)


def run(ctx):
    sender = ctx.sender
    if addressed_to_notifications_only(ctx):
        return triage(ctx, R_NOTIFICATIONS)
    if ctx.hints.get("create_ticket") is False:
        return ctx.finish(CONTACT_ONLY, "scanner rule creates the contact only", distribute=False)
    automatic = ctx.automatic.is_automatic
    if automatic and not (ctx.ticket and (sender.is_staff or associated(ctx))):
        return ctx.finish(IGNORED_AUTOMATIC, ctx.automatic.reason, triage_status=TRIAGE_CLOSED,
                          distribute=False)
    keyword = has_keyword(ctx)
    if ctx.ticket_number is not None:
        if ctx.ticket is None:
            return triage(ctx, R_UNKNOWN_TICKET)
        if sender.is_staff:
            to_public = any(ctx.services.is_public(a) for a in ctx.parsed.to)
            if keyword or not to_public:
                return _internal(ctx, R_KEYWORD if keyword else R_CC_ONLY)
            ctx.action, ctx.reason = FOLLOW_UP, R_EMPLOYEE
        elif associated(ctx):
            if keyword:
                return _internal(ctx, R_KEYWORD, set_inbox=True)
            ctx.action, ctx.reason, ctx.set_inbox = FOLLOW_UP, R_CUSTOMER, True
        else:
            return triage(ctx, R_UNKNOWN_SENDER)
        if automatic:
            ctx.distribute, ctx.set_inbox = False, False
            ctx.reason += f",automatic:{ctx.automatic.reason}"
        return
    if sender.is_staff:
        return triage(ctx, R_STAFF_NO_TICKET)
    if not sender.address or "@" not in sender.address:
        # No usable address ("From: Hans"): nobody to create a ticket for or to answer.
        return triage(ctx, R_UNKNOWN_SENDER)
    ctx.action, ctx.reason, ctx.set_inbox = NEW_TICKET, R_NEW, True
    ctx.ticket_number = next_ticket_number()  # as planned; apply allocates it under its lock
    if keyword:
        ctx.public, ctx.internal = False, True


def _internal(ctx, reason, set_inbox=False):
    ctx.action, ctx.reason = INTERNAL, reason
    ctx.public, ctx.internal, ctx.set_inbox = False, True, set_inbox
