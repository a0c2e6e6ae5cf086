"""A step run for every decision, after `notify`, before `blocks`: the ticket
events this mail writes (`plan.events`) and their automatic e-mails (seed 002,
`connector.workqueue.auto_emails`), so that `replay --dry-run` shows them.

    a new ticket          ticket_created, request_by_email (then apply places it in
                          its inboxes: `inbox_added`, no auto-email)
    a reply on a ticket   customer_replied | employee_replied | note_added
    an attributed bounce  delivery_failed on the ticket of the mail that bounced

Each event's mails are decided, rendered and keyed as the planner does for the
events recorded outside the pipeline (`auto_emails.decide`, `Planner.outgoing`),
on the ticket as this plan leaves it (a new ticket, a manager a scanner rule
sets, recipients joining; the auto-response planned counts as the requester's
confirmation); the `blocks` step then applies the blocks to them as to every
automatic mail. `apply` writes the events, then the mails, each row keyed
"<event id>:<address>". On top of `decide`:

  - a new ticket's confirmation to its requester answers the mail like the
    auto-response, and is held to its limits (`budget.confirmation_allowed`);
  - on a mail that may be part of a loop (`budget.loop_cause`) an auto-email
    counts against the loop budget per (address, ticket) and per address like
    a copy, and one mail causes at most one automatic mail to one address;
  - a bounce of an automatic mail (an auto-email, a notice) mails nobody: a
    dead address would otherwise be written to about itself without end.

The events of a mail with staff commands are listed but their auto-emails are
planned when apply runs the commands (what the commands change is known only
then; `replay --dry-run` does not show them).

Reads: the plan (action, ticket, new ticket, recipients joining, outgoing, bounce),
the sender, the ticket, auto_emails.yaml, the budgets.
Sets: `plan.events`; AUTO_EMAIL mails in `plan.outgoing`; `plan.suppressed`.
"""

from connector.pipeline import budget
from connector.pipeline.cli_mail import NOTE, kind_of
from connector.pipeline.context import FILED, NEW_TICKET, PlannedEvent
from connector.settings import auto_emails as auto_email_config
from connector.settings.auto_emails import REQUESTER
from connector.store import events
from connector.store.models import AUTO_EMAIL, AUTO_RESPONSE, NOTICE, Ticket
from connector.workqueue import auto_emails   # a module: it imports the pipeline's blocks step too

STEP = "events"
# Bounces of these kinds of mail plan no auto-email.
AUTOMATIC_KINDS = (AUTO_EMAIL, NOTICE)


def _events(ctx, now):
    """The events the plan writes, in order."""
    plan, planned = ctx.plan, []
    if plan.action in FILED:
        via, by = events.via_of_intake(ctx.spool.intake), ctx.sender.address or None
        detail = {"message_id": ctx.parsed.message_id, "public": bool(plan.public)}
        if plan.action == NEW_TICKET:
            forced = ctx.hints.get("triage")
            if forced:  # made by staff from a triage item: the creation is theirs
                planned.append(PlannedEvent(events.TICKET_CREATED, forced["by"], forced["via"],
                                            {**detail, "triage_item": forced["item"]}, now))
            else:
                planned.append(PlannedEvent(events.TICKET_CREATED, by, via, detail, now))
            planned.append(PlannedEvent(events.REQUEST_BY_EMAIL, by, via, detail, now))
        else:
            name = events.EMPLOYEE_REPLIED if ctx.sender.is_staff else events.CUSTOMER_REPLIED
            planned.append(PlannedEvent(events.NOTE_ADDED if kind_of(ctx) == NOTE else name, by, via, detail, now))
    bounce = plan.bounce
    if bounce and not bounce["again"] and bounce["ticket_id"]:
        planned.append(PlannedEvent(events.DELIVERY_FAILED, None, events.VIA_SYSTEM,
                                    {"outbox_id": bounce["outbox_id"], "reason": bounce["reason"],
                                     "via": bounce["via"], "recipients": bounce["recipients"],
                                     "spool_id": ctx.spool.id}, now, ticket_id=bounce["ticket_id"]))
    return planned


def _view(ctx, event):
    """The ticket of `event` as the plan leaves it when the event is written."""
    plan, settings = ctx.plan, ctx.services.settings
    if event.ticket_id is not None:
        return auto_emails.TicketView(Ticket.get_by_id(event.ticket_id), settings)
    confirmed = {a.lower() for o in plan.outgoing if o.kind == AUTO_RESPONSE for a in o.rcpt}
    joining = [a for a, _ in plan.external_recipients]
    if plan.action != NEW_TICKET:
        ticket = ctx.ticket
        return auto_emails.TicketView(ticket, settings, joining=joining, confirmed=confirmed,
                          manager=plan.ticket_changes.get("manager", ticket.manager),
                          status=plan.ticket_changes.get("status", ticket.status))
    new, sender = {**plan.new_ticket, **plan.ticket_changes}, ctx.sender
    requester = None if sender.is_staff or not sender.address else \
        (sender.contact.email if sender.contact is not None else sender.address)
    return auto_emails.TicketView(None, settings, id=None, number=plan.ticket_number, subject=new["subject"],
                      status=new.get("status", ""), requester=requester, entries=[], manager=new.get("manager"),
                      joining=joining, dispatcher=None, confirmed=confirmed,
                      placing=[name for name, _ in plan.inboxes])


def _budgeted(ctx, event, mail, out, loop):
    """Whether `out` stays within the budgets (what it does not is noted in `plan.suppressed`)."""
    address = out.rcpt[0]
    if mail.kind == REQUESTER and event.event in auto_emails.CREATION_EVENTS:
        return budget.confirmation_allowed(ctx, AUTO_EMAIL, address)
    if not loop:
        return True
    if any(o.budgeted and address in o.rcpt for o in ctx.plan.outgoing):
        budget.suppress(ctx, AUTO_EMAIL, address, budget.TICKET_LIMIT,
                        "a possible loop: this mail causes one automatic mail to an address at most")
        return False
    out.loop = bool(budget.within_loop_budget(ctx, AUTO_EMAIL, [address]))
    return out.loop


def run(ctx):
    plan, settings = ctx.plan, ctx.services.settings
    plan.events = _events(ctx, ctx.services.clock())
    config = auto_email_config.of(settings)
    if plan.commands is not None or not any(config.for_event(e.event) for e in plan.events):
        return ctx.record(STEP, STEP, f"{len(plan.events)} events")
    planner = auto_emails.Planner(settings, ctx.templates, ctx.services.signer)
    loop = budget.loop_cause(ctx) if ctx.ticket is not None and plan.action in FILED else ""
    views, count = {}, 0
    for index, event in enumerate(plan.events):
        if not config.for_event(event.event):
            continue
        if event.event == events.DELIVERY_FAILED and plan.bounce["kind"] in AUTOMATIC_KINDS:
            event.decision = auto_emails.Decision()
            plan.notes.append(f"a bounce of an automatic mail ({plan.bounce['kind']}): no auto-email")
            continue
        view = views.get(event.ticket_id) or views.setdefault(event.ticket_id, _view(ctx, event))
        event.decision = auto_emails.decide(view, event.event, event.by, settings, event.detail)
        mails = {m.address: m for m in event.decision.mails}
        for out in planner.outgoing(view, event, event.decision, index, renders=plan.renders):
            if _budgeted(ctx, event, mails[out.rcpt[0]], out, loop):
                plan.outgoing.append(out)
                view.confirmed.add(out.rcpt[0])
                count += 1
    ctx.record(STEP, STEP, f"{len(plan.events)} events, {count} auto-emails")
