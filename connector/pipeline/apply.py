"""Write one plan: ticket, recipients, message, triage item, outbox rows and
the spool state, all in one transaction (the caller holds it).

`apply` decides nothing: every value it writes is in `ctx.plan`, made by the
deciding steps (so `replay --dry-run` shows what is sent); it only adds the
store's ids and the time (an auto-email's event id, the triage item's id a
notice names). The one value read again here is the new ticket's
number, which `plan_current` checks under the filing lock before the plan is
written. Staff commands of the mail (`plan.commands`) are writes too: they
run here, in this transaction (`connector.pipeline.commands.run`, which says
what of their result mail only the run can know).

The plan's ticket events (`plan.events`) are written before the outbox rows:
an auto-email's row is keyed "<event id>:<address>" (unique in the outbox), the
id known only here. Events whose auto-emails the plan does not hold (a staff
mail's, whose commands run here) are recorded for the planner
(`connector.workqueue.auto_emails`).

Inserts go through `connector.store.bulk` (SQL built once): this is the
hottest path of the daemon. Every mail queued carries our loop marker and
leaves one `sent_mail` row per recipient, which the budgets count.
"""

from connector.health import template_failures
from connector.log import get_logger
from connector.mail.automatic import LOOP_HEADER
from connector.outbound import compose
from connector.pipeline import attribute, blocking, commands, notify
from connector.pipeline.budget import domain_of
from connector.pipeline.context import (
    CONTACT_ONLY, DUPLICATE, FILED, NEW_TICKET, REASON_PROCESSING_ERROR, REPLY_NOT_EXTRACTED, TRIAGED)
from connector.pipeline.reference import MAX_TICKET_NUMBER
from connector.store import bulk, events, outbox
from connector.store.filing import (
    close_superseded_triage, contact_id, forget_sent_before, next_triage_id, ticket_number_of_thread, triage_item_id)
from connector.store.models import (
    AUTO_EMAIL, AUTO_RESPONSE, COMMAND_REPLY, DISTRIBUTION, INBOUND, NOTICE, OUTBOUND, OUTBOX_BOUNCED, OUTBOX_PENDING,
    OUTBOX_SUPPRESSED, SPOOL_DONE, EmployeeRecipient, ExternalRecipient, Message, OutboxEntry,
    Processing, SentMail, ThreadRef, Ticket, TriageItem)
from connector.store.queries import filed_copies, sent_after, ticket_number_free, ticket_updated_at
from connector.workqueue import auto_emails, inbox

log = get_logger("pipeline")

SENT_MAIL_KEPT = 2 * 3600  # seconds
FORGET_EVERY = 60.0  # seconds between two deletions of old `sent_mail` rows (not one per mail filed)
_forget_at = {"next": float("-inf")}  # when this process deletes them next (by the filing clock)
SUPPRESSED_EVENTS = {AUTO_RESPONSE: "auto_response.suppressed", NOTICE: "notice.suppressed",
                     AUTO_EMAIL: "auto_email.suppressed"}


def plan_current(ctx):
    """Whether the plan still holds under the filing lock. It was made without the lock, and
    another filing process (`[worker] processes`, or a replay) may since have filed mail
    that changes it; the runner decides again when it did. Checked, each an index lookup:
    a new ticket still gets the number it was planned with, and the thread its References
    name still has no ticket (a parent filed meanwhile as a follow-up); the ticket a
    follow-up goes to was not changed by other mail (its loop and repeat checks, its
    recipients); no other copy of the mail was filed (a duplicate); and the budgets the
    plan's automatic mail passed were not spent by mail queued since (two processes never
    both send the last auto-response or notice an hour allows)."""
    plan, parsed = ctx.plan, ctx.parsed
    if plan.action == NEW_TICKET:
        if not ticket_number_free(plan.ticket_number):
            return False
        references = parsed.in_reply_to + parsed.references
        if references and ticket_number_of_thread(references) is not None:
            return False
    elif plan.action in FILED and ctx.ticket is not None:
        if ticket_updated_at(ctx.ticket.id) != ctx.ticket.updated_at:
            return False
    if plan.action != DUPLICATE and parsed is not None:
        copies = {copy.spool_id for copy in filed_copies(parsed.message_id, ctx.spool.sha256, ctx.spool.id)}
        if copies != set(plan.supersedes):
            return False
    headroom = ctx.budget_headroom
    return headroom is None or sent_after(ctx.sent_mark, headroom) < headroom


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


def _file_message(ctx, ticket_id, now):
    """The mail's `message` row and its auto-responses' (part of the ticket's history: public,
    from the public address), in one statement."""
    parsed, plan = ctx.parsed, ctx.plan
    rows = [dict(ticket=ticket_id, spool_id=ctx.spool.id, direction=INBOUND, from_addr=parsed.from_addr,
                 from_name=parsed.from_name, to=parsed.to, cc=parsed.cc, subject=parsed.subject,
                 public=plan.public, internal=plan.internal, text=parsed.text, reply_text=plan.reply_text,
                 rules_version=ctx.services.extractor.version if plan.reply_extracted else REPLY_NOT_EXTRACTED,
                 message_id=parsed.message_id,
                 attachments=[a.name for a in parsed.attachments if a.name], received_at=ctx.spool.received_at)]
    rows += [dict(ticket=ticket_id, spool_id=None, direction=OUTBOUND, from_addr=out.from_address,
                  from_name=out.from_name, to=out.to, cc=[], subject=out.subject, public=True,
                  internal=False, text=out.body, reply_text=out.body, rules_version="",
                  message_id=out.message_id, attachments=[], received_at=now)
             for out in plan.outgoing if out.kind == AUTO_RESPONSE]
    bulk.insert_many(Message, rows)


def _compose(ctx, out):
    services, parsed = ctx.services, ctx.parsed
    if out.kind == AUTO_RESPONSE:
        return compose.auto_response(parsed, out, services)
    if out.kind == DISTRIBUTION:  # a command mail's copy carries no command line
        copy = ctx.plan.commands.copy if ctx.plan.commands and ctx.plan.commands.copy else bytes(ctx.spool.raw)
        return compose.redistribution(copy, parsed, out, services)
    if out.kind == COMMAND_REPLY:
        return compose.command_reply(parsed, out, services)
    if out.kind == AUTO_EMAIL:
        return compose.auto_email(out, services.settings.public_address, services.settings.public_address,
                                  services.signer)
    return compose.inbound_notice(out, services)


def _queue(ctx, ticket_id, now, event_ids):
    """One outbox row per planned mail, as planned; an auto-email's on the ticket of its event,
    keyed by the event's id (`event_ids`: {index in plan.events: id}); a bounce's notice on the
    ticket of the mail that bounced (`Outgoing.ticket_id`)."""
    signer, plan = ctx.services.signer, ctx.plan
    rows, sent = [], []
    for out in plan.outgoing:
        about = plan.events[out.event] if out.event is not None else None
        ticket = (about.ticket_id if about is not None else out.ticket_id) or ticket_id
        rows.append({"ticket": ticket, "cause_id": ctx.spool.id, "kind": out.kind, "mail_from": out.mail_from,
                     "rcpt": out.rcpt, "to": out.to, "cc": out.cc, "bcc": out.bcc, "subject": out.subject,
                     "message_id": out.message_id, "raw": _marked(_compose(ctx, out), signer),
                     "status": OUTBOX_SUPPRESSED if out.suppressed else OUTBOX_PENDING, "blocked": out.blocked or None,
                     "attempts": 0, "next_attempt_at": now, "created_at": now,
                     "auto_key": auto_emails.auto_key(event_ids[out.event], out) if about is not None else None})
        # a bounce's notice is on its ticket (`outbox list`) but in no ticket's loop budget: an
        # employee answering that ticket right after it is no loop (a review)
        sent.append((out, plan.ticket_number if ticket and out.ticket_id is None else None))
    outbox.queue_many(rows)
    _record_sent(sent, now)


def _marked(raw, signer):
    """`raw` with our loop marker, so our mail is recognised when it comes back; the
    markers of other connectors on a redistributed original are kept."""
    return f"{LOOP_HEADER}: {signer.loop_token}\r\n".encode("ascii") + raw


def _record_sent(sent, now):
    """One `sent_mail` row per recipient of each (mail, ticket number): what the budgets count
    (they look an hour back)."""
    if not now < _forget_at["next"]:
        forget_sent_before(now - SENT_MAIL_KEPT)
        _forget_at["next"] = now + FORGET_EVERY
    bulk.insert_many(SentMail, [{"address": a.lower(), "domain": domain_of(a),
                                 "ticket": number, "kind": out.kind, "budgeted": out.budgeted, "at": now}
                                for out, number in sent if not out.suppressed for a in out.rcpt])


def _log_suppressed(plan):
    for item in plan.suppressed:
        log.info(SUPPRESSED_EVENTS.get(item["kind"], "loop.suppressed"), ticket=plan.ticket_number, **item)


def _log_auto_emails(plan, event_ids):
    for index, event in enumerate(plan.events):
        if event.decision is not None:
            auto_emails.log_planned(plan.ticket_number, event.event, event_ids[index], event.decision,
                                    [o for o in plan.outgoing if o.event == index])


def _write_events(plan, ticket_id, now, of_bounce):
    """The plan's events on the filed ticket (or, `of_bounce`, on the bounce's); {index: id}.
    Their auto-emails are in the plan, except a staff mail's (`connector.pipeline.ticket_events`)."""
    return {index: events.record(event.ticket_id or ticket_id, event.event, at=now, by=event.by, via=event.via,
                                 detail=event.detail, planned=plan.commands is None)
            for index, event in enumerate(plan.events) if (event.ticket_id is not None) == of_bounce}


def _write_bounce(plan, now):
    """An attributed bounce (`connector.pipeline.attribute`): the row bounced, the ticket's event; {index: id}."""
    bounce = plan.bounce
    attribute.log_decision(plan)
    if bounce["again"]:
        return {}
    reason = "; ".join(" ".join(filter(None, (r["address"], r["reason"], r["status"]))) for r in bounce["recipients"])
    bulk.update(OutboxEntry, bounce["outbox_id"], status=OUTBOX_BOUNCED, blocked=reason or bounce["reason"])
    return _write_events(plan, None, now, of_bounce=True)


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
    event_ids = _write_bounce(plan, now) if plan.bounce else {}
    if plan.action in FILED:
        _add_recipients(plan, ticket_id)
        _file_message(ctx, ticket_id, now)
        event_ids.update(_record_events(ctx, ticket_id, now))
        _queue(ctx, ticket_id, now, event_ids)
        _remember_threads([ctx.parsed.message_id] + [o.message_id for o in plan.outgoing], ticket_id)
    if plan.action in TRIAGED:
        notify.name_item(ctx, _write_triage(ctx))   # the notice names its item: the id is known now
        _queue(ctx, None, now, event_ids)   # notices (a bounce's auto-emails, a command reply) only for triage
    elif plan.action not in FILED and plan.outgoing:
        _queue(ctx, None, now, event_ids)   # a reply to a notice's commands: the result mail alone
    blocking.write(plan.blocks, now)
    if plan.supersedes:  # an earlier copy's notifications triage, now filed with this copy (see `classify`)
        close_superseded_triage(plan.supersedes, f"filed with spool entry {spool.id}")
    if ctx.replayed and plan.action in FILED:  # what its earlier decision left for review is filed now
        close_superseded_triage([spool.id], f"filed on replay ({plan.action})")
    record_processing(spool, SPOOL_DONE, plan.action, plan.reason, ctx.parsed.message_id, now,
                      ctx.services.settings.node_name)
    _log_suppressed(plan)
    _log_auto_emails(plan, event_ids)
    template_failures.note(ctx.services.settings.data_dir, plan.renders, now)   # `connector status`
    return ticket_id


def _write_triage(ctx):
    """The entry's triage item. A replay decides an entry again: the item its earlier
    decision wrote (not a processing error's, which the runner closes) takes the new
    decision in place, so `inbound list` keeps one item per mail and its id stays valid.
    Returns the item's id."""
    spool, plan = ctx.spool, ctx.plan
    fields = dict(status=plan.triage_status, reason=plan.reason, detail=plan.triage_detail,
                  from_addr=ctx.parsed.from_addr, subject=ctx.parsed.subject,
                  ticket_number=plan.ticket_number if (plan.ticket_number or 0) <= MAX_TICKET_NUMBER else None)
    item_id = triage_item_id(spool.id, not_reason=REASON_PROCESSING_ERROR) if ctx.replayed else None
    if item_id is None:
        item_id = next_triage_id()
        bulk.insert(TriageItem, id=item_id, spool_id=spool.id, received_at=spool.received_at, **fields)
    else:
        bulk.update(TriageItem, item_id, **fields)
    return item_id


def _record_events(ctx, ticket_id, now):
    """The ticket's history as planned (`connector.pipeline.ticket_events`): who wrote, through
    which channel (`tickets history`); a new ticket is then placed in its inboxes. {index: id}."""
    ids = _write_events(ctx.plan, ticket_id, now, of_bounce=False)
    if ctx.plan.action == NEW_TICKET:
        forced = ctx.hints.get("triage")
        inbox.place_planned(ticket_id, ctx.plan.inboxes, by=forced["by"] if forced else None,
                            via=forced["via"] if forced else events.via_of_intake(ctx.spool.intake), now=now,
                            settings=ctx.services.settings)
    return ids


def record_processing(spool, state, action, reason, message_id, now, node, attempts=0):
    """The processing row of a spool entry (replacing one a replay left `queued`); `node`: the
    `[node] name` of the process filing it."""
    bulk.insert_many(Processing, [{"spool_id": spool.id, "state": state, "action": action, "reason": reason,
                                   "message_id": message_id, "sha256": spool.sha256, "attempts": attempts,
                                   "processed_at": now, "node": node}], or_replace=True)
