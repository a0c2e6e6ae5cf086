"""Write one decision: ticket, recipients, message, triage item, outbox rows and
the spool state, all in one transaction (the caller holds it).

Inserts go through `connector.store.bulk` (SQL built once): this is the
hottest path of the daemon. Every mail queued carries our loop marker and
leaves one `sent_mail` row per recipient, which the budgets count.
"""

from connector.log import get_logger
from connector.outbound import compose
from connector.mail.automatic import LOOP_HEADER
from connector.pipeline import commands
from connector.pipeline.budget import domain_of
from connector.pipeline.context import (
    CONTACT_ONLY, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, REPLY_NOT_EXTRACTED, TRIAGE)
from connector.pipeline.distribute import AUTO_RESPONSE
from connector.pipeline.cli_mail import NOTE, kind_of
from connector.pipeline.notify import NOTICE
from connector.pipeline.reference import MAX_TICKET_NUMBER
from connector.store import bulk, events
from connector.store.models import (
    SPOOL_DONE, TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED, Contact, EmployeeRecipient, ExternalRecipient, Message,
    OutboxEntry, Processing, SentMail, ThreadRef, Ticket, TriageItem, database)
from connector.store.queries import next_ticket_number

log = get_logger("pipeline")

FILED = (NEW_TICKET, FOLLOW_UP, INTERNAL)
SENT_MAIL_KEPT = 2 * 3600  # seconds
SUPPRESSED_EVENTS = {AUTO_RESPONSE: "auto_response.suppressed", NOTICE: "notice.suppressed"}
TICKET_FIELDS = ("status", "manager", "priority")


def _contact_id(ctx, now):
    """The sender's contact id, creating the contact when unknown (not for staff)."""
    sender = ctx.sender
    if sender.is_staff or not sender.address:
        return None
    if sender.contact is None:
        # Looked up when deciding; a replay in another process may have created it meanwhile.
        Contact.insert(email=sender.address, name=sender.name or "",
                       account=sender.account.name if sender.account else None,
                       created_at=now).on_conflict_ignore().execute()
        sender.contact = Contact.get(Contact.email == sender.address)
    return sender.contact.id


def _create_ticket(ctx, now):
    account = ctx.sender.account
    row = {"number": next_ticket_number(), "subject": (ctx.parsed.subject or "").strip() or "(no subject)",
           "status": "New", "in_inbox": True, "contact": _contact_id(ctx, now),
           "account": account.name if account else None,
           "manager": account.manager if account and account.manager else None,
           "created_at": now, "updated_at": now}
    ticket_id = bulk.insert(Ticket, **row)
    bulk.insert(ExternalRecipient, ticket=ticket_id, address=ctx.sender.address, kind="to")
    bulk.insert_many(EmployeeRecipient, [{"ticket": ticket_id, "email": e} for e in ctx.employee_defaults])
    ctx.ticket = Ticket(id=ticket_id, **row)
    ctx.ticket_number = row["number"]
    return ctx.ticket


def _ticket_changes(ctx, now):
    """Columns of an existing ticket this message changes (update time, inbox, scanner fields)."""
    changes = {"updated_at": now}
    if ctx.set_inbox:
        changes["in_inbox"] = True
    for name, value in (ctx.hints.get("ticket_fields") or {}).items():
        if name == "inbox":
            changes["in_inbox"] = bool(value)
        elif name in TICKET_FIELDS:
            changes[name] = value
    return changes


def _add_recipients_from_headers(ctx, ticket_id):
    """To/Cc addresses of a filed mail join the ticket's recipients (seed 004, optional)."""
    services, sender = ctx.services, ctx.sender.address
    employees, external = [], []
    for kind, addresses in (("to", ctx.parsed.to), ("cc", ctx.parsed.cc)):
        for address in addresses:
            if address == sender or services.is_own(address):
                continue
            member = services.settings.staff_by_email(address)
            if member is not None:
                employees.append({"ticket": ticket_id, "email": member.email})
            else:
                external.append({"ticket": ticket_id, "address": address, "kind": kind})
    bulk.insert_many(EmployeeRecipient, employees, or_ignore=True)
    bulk.insert_many(ExternalRecipient, external, or_ignore=True)


def _file_message(ctx, ticket_id):
    parsed = ctx.parsed
    bulk.insert(Message, ticket=ticket_id, spool_id=ctx.spool.id, direction="in", from_addr=parsed.from_addr,
                from_name=parsed.from_name, to=parsed.to, cc=parsed.cc, subject=parsed.subject,
                public=ctx.public, internal=ctx.internal, text=parsed.text, reply_text=ctx.reply_text,
                rules_version=ctx.services.extractor.version if ctx.reply_extracted else REPLY_NOT_EXTRACTED,
                message_id=parsed.message_id,
                attachments=[a.name for a in parsed.attachments if a.name], received_at=ctx.spool.received_at)


def _queue(ctx, ticket, templates, now):
    """Render every planned mail into an outbox row; returns their Message-IDs."""
    services, parsed, settings = ctx.services, ctx.parsed, ctx.services.settings
    rows = []
    for out in ctx.outgoing:
        message_id = services.signer.make(ticket.number)
        if out.kind == AUTO_RESPONSE:
            subject, body, raw = compose.auto_response(parsed, out, services, templates, ticket, message_id)
            bulk.insert(Message, ticket=ticket.id, spool_id=None, direction="out", from_addr=settings.public_address,
                        from_name=out.from_name, to=out.to, cc=[], subject=subject, public=True,
                        internal=False, text=body, reply_text=body, rules_version="", message_id=message_id,
                        attachments=[], received_at=now)
        else:
            subject = services.subject_with_tag(parsed.subject, ticket.number)
            keyword = settings.internal_keyword
            if ctx.internal and keyword and keyword.lower() not in subject.lower():
                subject = f"{keyword} {subject}"  # so that replies to it stay internal
            out.subject = subject
            original = "" if ctx.sender.is_staff or not (out.to or out.cc) else parsed.from_addr
            copy = ctx.commands.copy if ctx.commands and ctx.commands.copy else bytes(ctx.spool.raw)
            raw = compose.redistribution(copy, parsed, out, services, message_id, original)
        rows.append({"ticket": ticket.id, "cause_id": ctx.spool.id, "kind": out.kind,
                     "mail_from": settings.public_address, "rcpt": out.rcpt, "to": out.to, "cc": out.cc,
                     "bcc": out.bcc, "subject": subject, "message_id": message_id,
                     "raw": _marked(raw, services), "status": "pending", "attempts": 0, "next_attempt_at": now,
                     "created_at": now})
    bulk.insert_many(OutboxEntry, rows)
    _record_sent(ctx.outgoing, ticket.number, now)
    return [row["message_id"] for row in rows]


def _queue_notices(ctx, templates, now):
    services = ctx.services
    rows = []
    for out in ctx.outgoing:  # only notices are planned for triage
        message_id = services.signer.make_notice()  # recognised when an answer to it comes back
        subject, _, raw = compose.inbound_notice(ctx.parsed, out, services, templates, ctx.reason,
                                                 ctx.ticket_number, message_id)
        rows.append({"ticket": None, "cause_id": ctx.spool.id, "kind": out.kind,
                     "mail_from": services.settings.notifications_address, "rcpt": out.rcpt, "to": out.to,
                     "cc": [], "bcc": [], "subject": subject, "message_id": message_id,
                     "raw": _marked(raw, services), "status": "pending", "attempts": 0, "next_attempt_at": now,
                     "created_at": now})
    bulk.insert_many(OutboxEntry, rows)
    _record_sent(ctx.outgoing, None, now)


def _marked(raw, services):
    """`raw` with our loop marker, so our mail is recognised when it comes back; the
    markers of other connectors on a redistributed original are kept."""
    return f"{LOOP_HEADER}: {services.signer.loop_token}\r\n".encode("ascii") + raw


def _record_sent(outgoing, ticket_number, now):
    """One `sent_mail` row per recipient: what the budgets count (they look an hour back)."""
    database.execute_sql('DELETE FROM "sent_mail" WHERE "at" < ?', (now - SENT_MAIL_KEPT,))
    bulk.insert_many(SentMail, [{"address": a.lower(), "domain": domain_of(a),
                                 "ticket": ticket_number, "kind": out.kind, "budgeted": out.budgeted, "at": now}
                                for out in outgoing for a in out.rcpt])


def _log_suppressed(ctx):
    for item in ctx.suppressed:
        log.info(SUPPRESSED_EVENTS.get(item["kind"], "loop.suppressed"), ticket=ctx.ticket_number, **item)


def _remember_threads(message_ids, ticket_id):
    """Message-IDs we filed or sent for this ticket, so replies thread by References."""
    bulk.insert_many(ThreadRef, [{"message_id": m, "ticket": ticket_id} for m in message_ids if m], or_ignore=True)


def apply_decision(ctx, templates):
    """Write `ctx`'s decision; returns the ticket touched (or None)."""
    now = ctx.services.clock()
    spool, ticket = ctx.spool, ctx.ticket
    if ctx.action == NEW_TICKET:
        ticket = _create_ticket(ctx, now)
    elif ctx.action in (FOLLOW_UP, INTERNAL):
        _contact_id(ctx, now)
        bulk.update(Ticket, ticket.id, **_ticket_changes(ctx, now))
    elif ctx.action == CONTACT_ONLY:
        _contact_id(ctx, now)
    if ctx.commands is not None:  # staff commands, before the mail is filed (a note of what was done)
        row = commands.run(ctx, ticket, templates, now)
        bulk.insert(OutboxEntry, **dict(row, raw=_marked(row["raw"], ctx.services)))
    if ctx.action == NEW_TICKET and ctx.hints.get("ticket_fields"):
        bulk.update(Ticket, ticket.id, **_ticket_changes(ctx, now))
    if ctx.action in FILED:
        if ctx.services.settings.add_recipients_from_headers and not ctx.automatic.is_automatic:
            _add_recipients_from_headers(ctx, ticket.id)
        _file_message(ctx, ticket.id)
        _remember_threads([ctx.parsed.message_id] + _queue(ctx, ticket, templates, now), ticket.id)
    if ctx.action in (TRIAGE, IGNORED_AUTOMATIC):
        bulk.insert(TriageItem, spool_id=spool.id, status=ctx.triage_status, reason=ctx.reason,
                    detail=ctx.sender.unauthenticated if ctx.sender else "",
                    from_addr=ctx.parsed.from_addr, subject=ctx.parsed.subject,
                    ticket_number=ctx.ticket_number if (ctx.ticket_number or 0) <= MAX_TICKET_NUMBER else None,
                    received_at=spool.received_at)
        _queue_notices(ctx, templates, now)
    if ctx.action in FILED:
        _record_event(ctx, ticket, now)
    _close_superseded(ctx)
    record_processing(spool, SPOOL_DONE, ctx.action, ctx.reason, ctx.parsed.message_id, now)
    _log_suppressed(ctx)
    return ticket


def _record_event(ctx, ticket, now):
    """The ticket's history: who wrote, through which channel (`tickets history`)."""
    via, by = events.via_of_intake(ctx.spool.intake), ctx.sender.address or None
    detail = {"message_id": ctx.parsed.message_id, "public": bool(ctx.public)}
    if ctx.action == NEW_TICKET:
        events.record(ticket.id, events.TICKET_CREATED, at=now, by=by, via=via, detail=detail)
        events.record(ticket.id, events.REQUEST_BY_EMAIL, at=now, by=by, via=via, detail=detail)
    else:
        name = events.EMPLOYEE_REPLIED if ctx.sender.is_staff else events.CUSTOMER_REPLIED
        if kind_of(ctx) == NOTE:
            name = events.NOTE_ADDED
        events.record(ticket.id, name, at=now, by=by, via=via, detail=detail)


def _close_superseded(ctx):
    """An earlier copy's notifications triage, now filed with this copy (see `classify`)."""
    if ctx.supersedes:
        TriageItem.update(status=TRIAGE_CLOSED, detail=f"filed with spool entry {ctx.spool.id}").where(
            TriageItem.spool_id.in_(ctx.supersedes) & (TriageItem.status == TRIAGE_AWAITING_REVIEW)).execute()


def record_processing(spool, state, action, reason, message_id, now, attempts=0):
    """The processing row of a spool entry (replacing one a replay left `queued`)."""
    bulk.insert_many(Processing, [{"spool_id": spool.id, "state": state, "action": action, "reason": reason,
                                   "message_id": message_id, "sha256": spool.sha256, "attempts": attempts,
                                   "processed_at": now}], or_replace=True)
