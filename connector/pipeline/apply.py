"""Write one plan: ticket, recipients, message, triage item, outbox rows and
the spool state, all in one transaction (the caller holds it).

`apply` decides nothing: every value it writes is in `ctx.plan`, made by the
deciding steps (so `replay --dry-run` shows what is sent); it only adds the
store's ids and the time. The one value read again here is the new ticket's
number, which `plan_current` checks under the filing lock before the plan is
written. Staff commands of the mail (`plan.commands`) are writes too: they
run here, in this transaction (`connector.pipeline.commands.run`, which says
what of their result mail only the run can know).

Inserts go through `connector.store.bulk` (SQL built once): this is the
hottest path of the daemon. Every mail queued carries our loop marker and
leaves one `sent_mail` row per recipient, which the budgets count.
"""

from connector.log import get_logger
from connector.mail.automatic import LOOP_HEADER
from connector.outbound import compose
from connector.pipeline import attribute, commands
from connector.pipeline.budget import domain_of
from connector.pipeline.cli_mail import NOTE, kind_of
from connector.pipeline.context import CONTACT_ONLY, FILED, NEW_TICKET, REPLY_NOT_EXTRACTED, TRIAGED
from connector.pipeline.reference import MAX_TICKET_NUMBER
from connector.store import blocks, bulk, events
from connector.store.filing import close_superseded_triage, contact_id, forget_sent_before, next_triage_id
from connector.store.models import (
    AUTO_RESPONSE, COMMAND_REPLY, DISTRIBUTION, INBOUND, NOTICE, OUTBOUND, OUTBOX_BOUNCED, OUTBOX_PENDING,
    OUTBOX_SUPPRESSED, SPOOL_DONE, EmployeeRecipient, ExternalRecipient, Message, OutboxEntry,
    Processing, SentMail, ThreadRef, Ticket, TriageItem)
from connector.store.queries import ticket_number_free
from connector.workqueue import inbox

log = get_logger("pipeline")

SENT_MAIL_KEPT = 2 * 3600  # seconds
SUPPRESSED_EVENTS = {AUTO_RESPONSE: "auto_response.suppressed", NOTICE: "notice.suppressed"}


def plan_current(ctx):
    """Whether the plan still holds under the filing lock: a new ticket gets the number
    it was planned with (another process may have filed one since the plan was made)."""
    return ctx.plan.action != NEW_TICKET or ticket_number_free(ctx.plan.ticket_number)


def _contact_id(ctx, now):
    """The sender's contact id, creating the contact when unknown (not for staff)."""
    sender = ctx.sender
    if sender.is_staff or not sender.address:
        return None
    if sender.contact is None:
        return contact_id(sender.address, sender.name or "", sender.account.name if sender.account else None, now)
    return sender.contact.id


def _create_ticket(ctx, now):
    plan = ctx.plan
    row = {**plan.new_ticket, **plan.ticket_changes, "number": plan.ticket_number,
           "contact": _contact_id(ctx, now), "created_at": now, "updated_at": now}
    ticket_id = bulk.insert(Ticket, **row)
    return Ticket(id=ticket_id, **row)


def _add_recipients(plan, ticket_id):
    bulk.insert_many(EmployeeRecipient, [{"ticket": ticket_id, "email": e} for e in plan.employee_recipients],
                     or_ignore=True)
    bulk.insert_many(ExternalRecipient, [{"ticket": ticket_id, "address": a, "kind": k}
                                         for a, k in plan.external_recipients], or_ignore=True)


def _file_message(ctx, ticket_id):
    parsed, plan = ctx.parsed, ctx.plan
    bulk.insert(Message, ticket=ticket_id, spool_id=ctx.spool.id, direction=INBOUND, from_addr=parsed.from_addr,
                from_name=parsed.from_name, to=parsed.to, cc=parsed.cc, subject=parsed.subject,
                public=plan.public, internal=plan.internal, text=parsed.text, reply_text=plan.reply_text,
                rules_version=ctx.services.extractor.version if plan.reply_extracted else REPLY_NOT_EXTRACTED,
                message_id=parsed.message_id,
                attachments=[a.name for a in parsed.attachments if a.name], received_at=ctx.spool.received_at)


def _compose(ctx, out):
    services, parsed = ctx.services, ctx.parsed
    if out.kind == AUTO_RESPONSE:
        return compose.auto_response(parsed, out, services)
    if out.kind == DISTRIBUTION:  # a command mail's copy carries no command line
        copy = ctx.plan.commands.copy if ctx.plan.commands and ctx.plan.commands.copy else bytes(ctx.spool.raw)
        return compose.redistribution(copy, parsed, out, services)
    if out.kind == COMMAND_REPLY:
        return compose.command_reply(parsed, out, services)
    return compose.inbound_notice(out, services)


def _queue(ctx, ticket_id, now):
    """One outbox row per planned mail, as planned."""
    signer = ctx.services.signer
    rows = [{"ticket": ticket_id, "cause_id": ctx.spool.id, "kind": out.kind, "mail_from": out.mail_from,
             "rcpt": out.rcpt, "to": out.to, "cc": out.cc, "bcc": out.bcc, "subject": out.subject,
             "message_id": out.message_id, "raw": _marked(_compose(ctx, out), signer),
             "status": OUTBOX_SUPPRESSED if out.suppressed else OUTBOX_PENDING, "blocked": out.blocked or None,
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for out in ctx.plan.outgoing]
    bulk.insert_many(OutboxEntry, rows)
    _record_sent(ctx.plan.outgoing, ctx.plan.ticket_number if ticket_id else None, now)


def _file_auto_responses(ctx, ticket_id, now):
    """An auto-response is part of the ticket's history (public, from the public address)."""
    for out in ctx.plan.outgoing:
        if out.kind == AUTO_RESPONSE:
            bulk.insert(Message, ticket=ticket_id, spool_id=None, direction=OUTBOUND, from_addr=out.from_address,
                        from_name=out.from_name, to=out.to, cc=[], subject=out.subject, public=True,
                        internal=False, text=out.body, reply_text=out.body, rules_version="",
                        message_id=out.message_id, attachments=[], received_at=now)


def _marked(raw, signer):
    """`raw` with our loop marker, so our mail is recognised when it comes back; the
    markers of other connectors on a redistributed original are kept."""
    return f"{LOOP_HEADER}: {signer.loop_token}\r\n".encode("ascii") + raw


def _record_sent(outgoing, ticket_number, now):
    """One `sent_mail` row per recipient: what the budgets count (they look an hour back)."""
    forget_sent_before(now - SENT_MAIL_KEPT)
    bulk.insert_many(SentMail, [{"address": a.lower(), "domain": domain_of(a),
                                 "ticket": ticket_number, "kind": out.kind, "budgeted": out.budgeted, "at": now}
                                for out in outgoing if not out.suppressed for a in out.rcpt])


def _log_suppressed(plan):
    for item in plan.suppressed:
        log.info(SUPPRESSED_EVENTS.get(item["kind"], "loop.suppressed"), ticket=plan.ticket_number, **item)


def _write_bounce(plan, spool_id, now):
    """An attributed bounce (`connector.pipeline.attribute`): the row bounced, the ticket's event."""
    bounce = plan.bounce
    attribute.log_decision(plan)
    if bounce["again"]:
        return
    reason = "; ".join(" ".join(filter(None, (r["address"], r["reason"], r["status"]))) for r in bounce["recipients"])
    bulk.update(OutboxEntry, bounce["outbox_id"], status=OUTBOX_BOUNCED, blocked=reason or bounce["reason"])
    if bounce["ticket_id"]:
        events.record(bounce["ticket_id"], events.DELIVERY_FAILED, at=now, by=None, via=events.VIA_SYSTEM,
                      detail={"outbox_id": bounce["outbox_id"], "reason": bounce["reason"], "via": bounce["via"],
                              "recipients": bounce["recipients"], "spool_id": spool_id})


def _write_blocks(plan, now):
    for block in plan.blocks:
        block_id = blocks.add(block["kind"], block["target"], block["reason"], block["source"], now, block["hours"],
                              hard=block["hard"])
        log.info("block.added", block_id=block_id, **{k: block[k] for k in ("kind", "target", "reason", "hours")})


def _remember_threads(message_ids, ticket_id):
    """Message-IDs we filed or sent for this ticket, so replies thread by References."""
    bulk.insert_many(ThreadRef, [{"message_id": m, "ticket": ticket_id} for m in message_ids if m], or_ignore=True)


def apply_decision(ctx):
    """Write `ctx.plan`; returns the id of the ticket touched (or None)."""
    now = ctx.services.clock()
    spool, plan = ctx.spool, ctx.plan
    ticket_id = None
    if plan.action == NEW_TICKET:
        ticket_id = _create_ticket(ctx, now).id
    elif plan.action in FILED:
        ticket_id = ctx.ticket.id
        _contact_id(ctx, now)
        bulk.update(Ticket, ticket_id, updated_at=now, **plan.ticket_changes)
    elif plan.action == CONTACT_ONLY:
        _contact_id(ctx, now)
    if plan.commands is not None:  # staff commands, before the mail is filed (a note of what was done)
        commands.run(ctx, now)
    if plan.action in FILED:
        _add_recipients(plan, ticket_id)
        _file_message(ctx, ticket_id)
        _file_auto_responses(ctx, ticket_id, now)
        _queue(ctx, ticket_id, now)
        _remember_threads([ctx.parsed.message_id] + [o.message_id for o in plan.outgoing], ticket_id)
    if plan.action in TRIAGED:
        bulk.insert(TriageItem, id=next_triage_id(), spool_id=spool.id, status=plan.triage_status, reason=plan.reason,
                    detail=plan.triage_detail,
                    from_addr=ctx.parsed.from_addr, subject=ctx.parsed.subject,
                    ticket_number=plan.ticket_number if (plan.ticket_number or 0) <= MAX_TICKET_NUMBER else None,
                    received_at=spool.received_at)
        _queue(ctx, None, now)   # notices (and a command reply) only are planned for triage
    elif plan.action not in FILED and plan.outgoing:
        _queue(ctx, None, now)   # a reply to a notice's commands: the result mail alone
    if plan.action in FILED:
        _record_event(ctx, ticket_id, now)
    if plan.bounce:
        _write_bounce(plan, spool.id, now)
    _write_blocks(plan, now)
    if plan.supersedes:  # an earlier copy's notifications triage, now filed with this copy (see `classify`)
        close_superseded_triage(plan.supersedes, f"filed with spool entry {spool.id}")
    record_processing(spool, SPOOL_DONE, plan.action, plan.reason, ctx.parsed.message_id, now)
    _log_suppressed(plan)
    return ticket_id


def _record_event(ctx, ticket_id, now):
    """The ticket's history: who wrote, through which channel (`tickets history`)."""
    via, by = events.via_of_intake(ctx.spool.intake), ctx.sender.address or None
    detail = {"message_id": ctx.parsed.message_id, "public": bool(ctx.plan.public)}
    if ctx.plan.action == NEW_TICKET:
        forced = ctx.hints.get("triage")
        if forced:  # made by staff from a triage item: the creation is theirs
            events.record(ticket_id, events.TICKET_CREATED, at=now, by=forced["by"], via=forced["via"],
                          detail={**detail, "triage_item": forced["item"]})
        else:
            events.record(ticket_id, events.TICKET_CREATED, at=now, by=by, via=via, detail=detail)
        events.record(ticket_id, events.REQUEST_BY_EMAIL, at=now, by=by, via=via, detail=detail)
        inbox.place_planned(ticket_id, ctx.plan.inboxes, by=forced["by"] if forced else None,
                            via=forced["via"] if forced else via, now=now, settings=ctx.services.settings)
    else:
        name = events.EMPLOYEE_REPLIED if ctx.sender.is_staff else events.CUSTOMER_REPLIED
        if kind_of(ctx) == NOTE:  # `tickets note`
            name = events.NOTE_ADDED
        events.record(ticket_id, name, at=now, by=by, via=via, detail=detail)


def record_processing(spool, state, action, reason, message_id, now, attempts=0):
    """The processing row of a spool entry (replacing one a replay left `queued`)."""
    bulk.insert_many(Processing, [{"spool_id": spool.id, "state": state, "action": action, "reason": reason,
                                   "message_id": message_id, "sha256": spool.sha256, "attempts": attempts,
                                   "processed_at": now}], or_replace=True)
