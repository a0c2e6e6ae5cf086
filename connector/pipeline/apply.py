"""Write one decision: ticket, recipients, message, triage item, outbox rows and
the spool state, all in one transaction (the caller holds it)."""

from connector.outbound import compose
from connector.pipeline.context import (
    CONTACT_ONLY, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, TRIAGE)
from connector.pipeline.distribute import AUTO_RESPONSE
from connector.store.models import (
    SPOOL_DONE, Contact, EmployeeRecipient, ExternalRecipient, Message, OutboxEntry, ThreadRef, Ticket,
    TriageItem)
from connector.store.queries import next_ticket_number

FILED = (NEW_TICKET, FOLLOW_UP, INTERNAL)
TICKET_FIELDS = ("status", "manager", "priority", "inbox")


def _contact(ctx, now):
    sender = ctx.sender
    if sender.is_staff or not sender.address:
        return None
    if sender.contact is None:
        Contact.insert(email=sender.address, name=sender.name or "",
                       account=sender.account.name if sender.account else None,
                       created_at=now).on_conflict_ignore().execute()
        sender.contact = Contact.get(Contact.email == sender.address)
    return sender.contact


def _create_ticket(ctx, now):
    account = ctx.sender.account
    subject = (ctx.parsed.subject or "").strip() or "(no subject)"
    ticket = Ticket.create(number=next_ticket_number(), subject=subject, in_inbox=True,
                           contact=_contact(ctx, now), account=account.name if account else None,
                           manager=account.manager if account and account.manager else None,
                           created_at=now, updated_at=now)
    ExternalRecipient.create(ticket=ticket, address=ctx.sender.address, kind="to")
    for email in ctx.employee_defaults:
        EmployeeRecipient.create(ticket=ticket, email=email)
    ctx.ticket, ctx.ticket_number = ticket, ticket.number
    return ticket


def _apply_hints(ticket, hints):
    """Fields a scanner rule's create_or_update_ticket action sets."""
    for name, value in (hints.get("ticket_fields") or {}).items():
        if name == "inbox":
            ticket.in_inbox = bool(value)
        elif name in TICKET_FIELDS:
            setattr(ticket, name, value)


def _ref(message_id, ticket):
    if message_id:
        ThreadRef.insert(message_id=message_id, ticket=ticket).on_conflict_ignore().execute()


def _file_message(ctx, ticket, now):
    parsed = ctx.parsed
    message = Message.create(
        ticket=ticket, spool=ctx.spool, direction="in", from_addr=parsed.from_addr,
        from_name=parsed.from_name, to=parsed.to, cc=parsed.cc, subject=parsed.subject,
        public=ctx.public, internal=ctx.internal, text=parsed.text, reply_text=ctx.reply_text,
        rules_version=ctx.services.extractor.version, message_id=parsed.message_id,
        attachments=[a.name for a in parsed.attachments if a.name], received_at=ctx.spool.received_at)
    _ref(parsed.message_id, ticket)
    return message


def _queue(ctx, ticket, templates, now):
    services, parsed = ctx.services, ctx.parsed
    for out in ctx.outgoing:
        message_id = services.signer.make(ticket.number)
        if out.kind == AUTO_RESPONSE:
            subject, body, raw = compose.auto_response(parsed, out, services, templates, ticket, message_id)
            Message.create(ticket=ticket, direction="out", from_addr=services.settings.public_address,
                           from_name=out.from_name, to=out.to, subject=subject, public=True,
                           text=body, reply_text=body, message_id=message_id, received_at=now)
        else:
            subject = services.subject_with_tag(parsed.subject, ticket.number)
            if ctx.internal and services.settings.internal_keyword:
                keyword = services.settings.internal_keyword
                if keyword.lower() not in subject.lower():
                    subject = f"{keyword} {subject}"  # replies stay internal
            out.subject = subject
            original = parsed.from_addr if not ctx.sender.is_staff else ""
            raw = compose.redistribution(bytes(ctx.spool.raw), parsed, out, services, message_id,
                                         original_from=original if out.to or out.cc else "")
        OutboxEntry.create(ticket=ticket, cause=ctx.spool, kind=out.kind,
                           mail_from=services.settings.public_address, rcpt=out.rcpt, to=out.to, cc=out.cc,
                           bcc=out.bcc, subject=subject, message_id=message_id, raw=raw,
                           next_attempt_at=now, created_at=now)
        _ref(message_id, ticket)


def apply_decision(ctx, templates):
    """Write `ctx`'s decision; returns the Ticket touched (or None)."""
    now = ctx.services.clock()
    spool, ticket = ctx.spool, ctx.ticket
    if ctx.action == NEW_TICKET:
        ticket = _create_ticket(ctx, now)
    elif ctx.action in (FOLLOW_UP, INTERNAL):
        _contact(ctx, now) if not ctx.sender.is_staff else None
        ticket.updated_at = now
        if ctx.set_inbox:
            ticket.in_inbox = True
    elif ctx.action == CONTACT_ONLY:
        _contact(ctx, now)
    if ctx.action in FILED:
        _apply_hints(ticket, ctx.hints)
        ticket.save()
        _file_message(ctx, ticket, now)
        _queue(ctx, ticket, templates, now)
    if ctx.action in (TRIAGE, IGNORED_AUTOMATIC):
        TriageItem.create(spool=spool, status=ctx.triage_status, reason=ctx.reason,
                          from_addr=ctx.parsed.from_addr, subject=ctx.parsed.subject,
                          ticket_number=ctx.ticket_number, received_at=spool.received_at)
    spool.state, spool.action, spool.reason = SPOOL_DONE, ctx.action, ctx.reason
    spool.message_id, spool.processed_at = ctx.parsed.message_id or None, now
    spool.save()
    return ticket
