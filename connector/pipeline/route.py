"""Step 5: the decision. Seed 004 (customer / employee correspondence, internal
mail, public flag) and seed 000 (what cannot be routed goes to triage).

    our own mail come back (loop marker, our Message-ID) counts as automatic
    an employee's From, not authenticated      -> triage unauthenticated_staff (staff_authentication)
    to the notifications address only          -> triage notifications_address,
                                                  ignored_automatic when automatic (no notice)
    automatic, ticket known, sender associated -> follow_up, filed, not distributed
    automatic otherwise                        -> ignored_automatic (kept, listed closed)
    reference to a ticket that does not exist  -> triage unknown_ticket
    reference, employee                        -> follow_up, or internal (keyword / not in To)
    reference, contact, external recipient or
      the main_contact of the ticket's account -> follow_up (public), internal with keyword
    reference by a scanner rule's own `match`  -> follow_up (public): the rule vouches (seed 003)
    reference, anybody else                    -> triage unknown_sender (never append a stranger)
    no reference, employee                     -> triage staff_without_ticket
    no reference, anybody else                 -> new_ticket
"""

from connector.mail.automatic import LOOP, Automatic, own_mail
from connector.pipeline.context import (
    CONTACT_ONLY, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, R_CC_ONLY, R_CUSTOMER,
    R_EMPLOYEE, R_KEYWORD, R_NEW, R_NOTIFICATIONS, R_SCANNER_RULE, R_STAFF_NO_TICKET, R_UNAUTHENTICATED_STAFF,
    R_UNKNOWN_SENDER, R_UNKNOWN_TICKET, TRIAGE)
from connector.store.models import TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED, ExternalRecipient
from connector.store.queries import next_ticket_number


def delivered_to(ctx):
    """Who the message was delivered to: the envelope recipients of this copy and of its
    earlier copies together (`classify` collects them), else the To/Cc headers (IMAP)."""
    return ctx.envelope or ctx.spool.rcpt_to or (ctx.parsed.to + ctx.parsed.cc)


def addressed_to_notifications_only(ctx):
    return notifications_only(ctx.services, delivered_to(ctx))


def notifications_only(services, rcpts):
    """Whether these recipients include the notifications address and not the public one."""
    return any(services.is_notifications(a) for a in rcpts) and not any(services.is_public(a) for a in rcpts)


def has_keyword(ctx):
    keyword = ctx.services.settings.internal_keyword
    return bool(keyword) and keyword.lower() in (ctx.parsed.subject or "").lower()


def associated(ctx):
    """The sender is the ticket's contact, its account's main contact, or one of its external recipients."""
    ticket, address = ctx.ticket, ctx.sender.address
    if ticket.contact_id is not None and ticket.contact.email == address:
        return True
    if address and ticket.account and any(a.name == ticket.account and a.main_contact == address.lower()
                                          for a in ctx.services.settings.accounts):
        return True
    return ExternalRecipient.select().where(
        (ExternalRecipient.ticket == ticket) & (ExternalRecipient.address == address)).exists()


def vouched_by_rule(ctx):
    """A scanner rule's own `match` regex found this ticket in the subject.

    Seed 003: with a rule's regex, "if … such a ticket is found in the system,
    the scanner will link the email to that ticket": the administrator wrote
    the rule for this sender (a partner's system quoting our number), so it
    is filed even though the sender is not on the ticket. The default ticket
    tag never vouches: a stranger quoting a tag still goes to triage.
    """
    return bool(ctx.hints.get("ticket_match")) and ctx.ref_via == "subject"


def triage(ctx, reason, status=TRIAGE_AWAITING_REVIEW):
    ctx.finish(TRIAGE, reason, triage_status=status, distribute=False)


def ignore_automatic(ctx):
    ctx.finish(IGNORED_AUTOMATIC, ctx.automatic.reason, triage_status=TRIAGE_CLOSED, distribute=False)


def run(ctx):
    sender = ctx.sender
    if not ctx.automatic.is_automatic and own_mail(ctx.parsed, ctx.services.signer):
        ctx.automatic = Automatic(True, False, LOOP)
    if sender.unauthenticated:  # a staff From the MTA did not vouch for: never filed, never distributed
        return triage(ctx, R_UNAUTHENTICATED_STAFF)
    automatic = ctx.automatic.is_automatic
    if addressed_to_notifications_only(ctx):
        # Automatic first: a notice answering an autoresponder behind triage_notice_to loops.
        return ignore_automatic(ctx) if automatic else triage(ctx, R_NOTIFICATIONS)
    if ctx.hints.get("create_ticket") is False:
        return ctx.finish(CONTACT_ONLY, "scanner rule creates the contact only", distribute=False)
    if automatic and not (ctx.ticket and (sender.is_staff or associated(ctx))):
        return ignore_automatic(ctx)
    keyword = has_keyword(ctx)
    if ctx.ticket_number is not None:
        if ctx.ticket is None:
            return triage(ctx, R_UNKNOWN_TICKET)
        if sender.is_staff:
            to_public = any(ctx.services.is_public(a) for a in ctx.parsed.to)
            if keyword or not to_public:
                return _internal(ctx, R_KEYWORD if keyword else R_CC_ONLY)
            ctx.action, ctx.reason = FOLLOW_UP, R_EMPLOYEE
        else:
            reason = R_CUSTOMER if associated(ctx) else R_SCANNER_RULE if vouched_by_rule(ctx) else None
            if reason is None:
                return triage(ctx, R_UNKNOWN_SENDER)
            if keyword:
                return _internal(ctx, R_KEYWORD, set_inbox=True)
            ctx.action, ctx.reason, ctx.set_inbox = FOLLOW_UP, reason, True
        if automatic:
            ctx.distribute, ctx.set_inbox = False, False
            if sender.is_staff:  # an employee's out-of-office is no customer history
                ctx.public = False
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
