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

`create_ticket` and `attach` file the item's spooled mail through the pipeline
again, with the hint `triage` forcing the decision (the `staff_*` links of `route`):
the ticket or follow-up is made by the same apply code, in the caller's
transaction, with the same events, as one by mail. They take the caller's
pipeline `services` (and `templates`): the CLI builds them, a staff mail
command passes its own `ctx.services`.

`--quiet`: create_ticket sends no auto-response; attach mails no copy.
"""

import copy

from connector import timebudget
from connector.log import get_logger
from connector.outbound.compose import Templates
from connector.pipeline import decide
from connector.pipeline.apply import apply_decision
from connector.pipeline.context import FILED, NEW_TICKET, REASON_PROCESSING_ERROR, Context
from connector.pipeline.reference import find_ticket
from connector.store import events
from connector.store.models import (
    AUTO_RESPONSE, RECIPIENT_CC, SPOOL_DONE, TRIAGE_CLOSED, TRIAGE_STATUSES, ExternalRecipient, Processing,
    TriageItem, TriageTombstone)
from connector.store.queries import spool_entry
from connector.store.spool import drop_raw
from connector.workqueue.errors import Refused

log = get_logger("triage")

ATTACH = "attach"  # the forced decision of `attach` (NEW_TICKET is that of `create_ticket`)


def item_or_refuse(item_id):
    item = TriageItem.get_or_none(TriageItem.id == item_id)
    if item is None:
        raise Refused(f"no inbound item {item_id}")
    return item


def _open_item(item_id):
    """The item, still to be handled: not closed, its mail processed and not filed yet, bytes kept."""
    item = item_or_refuse(item_id)
    if item.status == TRIAGE_CLOSED:
        done = f" ({item.detail})" if item.detail else ""
        raise Refused(f"inbound item {item_id} is closed already{done}; "
                      f"`connector inbound status {item_id} awaiting_review` opens it again")
    processing = Processing.get_or_none(Processing.spool_id == item.spool_id)
    if item.reason == REASON_PROCESSING_ERROR or processing is None or processing.state != SPOOL_DONE:
        raise Refused(f"inbound item {item_id}: its mail failed to process or waits to be processed; "
                      f"`connector inbound replay {item_id}` processes it again")
    if processing.action in FILED:
        raise Refused(f"inbound item {item_id}: its mail is filed already ({processing.action}, {processing.reason})")
    return item


def _refile(item, forced, services, templates, now):
    """Decide the item's mail again with `forced` as the decision; the Context, not yet applied.
    Its clock is the action's `now`: what the filing writes is dated with the action."""
    spool = spool_entry(item.spool_id)
    if spool is None or not len(spool.raw or b""):
        raise Refused(f"inbound item {item.id}: its original bytes were pruned ([retention] raw_days); "
                      "nothing to file")
    spool.hints = {**(spool.hints or {}), "triage": forced}  # `quiet` in it: distribute plans no mail
    services = copy.copy(services)
    services.clock = lambda: now
    templates = templates or Templates(services.settings.folder_candidates("templates"))
    with timebudget.limit(services.settings.message_time_budget):
        ctx = decide(Context(services, spool, templates))
    plan = ctx.plan
    if plan.action not in FILED:
        raise Refused(f"inbound item {item.id} cannot be filed: its mail is {plan.action} ({plan.reason})")
    return ctx


def _link(item, ticket_number, detail):
    TriageItem.update(status=TRIAGE_CLOSED, ticket_number=ticket_number, detail=detail).where(
        TriageItem.id == item.id).execute()


def create_ticket(item_id, *, by, via, now, quiet=False, services=None, templates=None):
    """A new ticket from the item's mail, as if it had come by mail; returns its number."""
    assert services is not None, "create_ticket files through the pipeline: pass the caller's services"
    item = _open_item(item_id)
    ctx = _refile(item, {"action": NEW_TICKET, "item": item.id, "by": by, "via": via, "quiet": bool(quiet)},
                  services, templates, now)
    if ctx.sender.is_staff or "@" not in (ctx.sender.address or ""):
        raise Refused(f"inbound item {item_id} is from {ctx.sender.address or 'no address'}, not a customer: "
                      "a ticket needs a customer address as its contact; attach it to a ticket instead")
    apply_decision(ctx)
    number = ctx.plan.ticket_number
    _link(item, number, f"ticket {number} created by {by}")
    log.info("triage.ticket_created", item=item.id, ticket=number, by=by, via=via, sender=ctx.sender.address,
             auto_response=any(o.kind == AUTO_RESPONSE for o in ctx.plan.outgoing))
    return number


def attach(item_id, ticket_number, *, by, via, now, internal=False, add_recipient=False, quiet=False,
           services=None, templates=None):
    """File the item's mail into an existing ticket as a follow-up from its sender."""
    assert services is not None, "attach files through the pipeline: pass the caller's services"
    item = _open_item(item_id)
    if find_ticket(ticket_number) is None:
        raise Refused(f"no ticket {ticket_number}")
    forced = {"action": ATTACH, "item": item.id, "by": by, "via": via, "ticket": ticket_number,
              "internal": bool(internal), "quiet": bool(quiet)}
    ctx = _refile(item, forced, services, templates, now)
    sender = ctx.sender.address
    if add_recipient and (ctx.sender.is_staff or "@" not in (sender or "") or services.addresses.is_own(sender)):
        raise Refused(f"--add-recipient: {sender or 'the sender'} cannot be an external recipient "
                      "(an employee or no customer address)")
    ticket_id = apply_decision(ctx)
    if add_recipient:
        ExternalRecipient.insert(ticket=ticket_id, address=sender, kind=RECIPIENT_CC).on_conflict_ignore().execute()
    events.record(ticket_id, events.TRIAGE_ATTACHED, at=now, by=by, via=via,
                  detail={"item": item.id, "message_id": ctx.parsed.message_id, "public": bool(ctx.plan.public),
                          "from": sender, "added_recipient": bool(add_recipient)})
    _link(item, ticket_number, f"attached to ticket {ticket_number} by {by}")
    log.info("triage.attached", item=item.id, ticket=ticket_number, by=by, via=via, public=bool(ctx.plan.public),
             added_recipient=bool(add_recipient), outgoing=len(ctx.plan.outgoing))


def close(item_id, *, by, via, now):
    """Handled elsewhere (seed 000, "Mark As Closed")."""
    set_status(item_id, TRIAGE_CLOSED, by=by, via=via, now=now)


def set_status(item_id, status, *, by, via, now):
    """awaiting_review, needs_attention or closed; the item stays, its mail untouched. With
    `by` (`--as`, a staff mail's sender) "marked STATUS by EMAIL" is added to its detail."""
    if status not in TRIAGE_STATUSES:
        raise Refused(f"{status!r} is not a status of an inbound item (use one of: {', '.join(TRIAGE_STATUSES)})")
    item = item_or_refuse(item_id)
    if item.status == status:
        raise Refused(f"inbound item {item_id} is {status} already")
    changes = {"status": status}
    if by:  # who did it stays on the item, as create-ticket and attach note theirs in `detail`
        changes["detail"] = "; ".join(filter(None, (item.detail, f"marked {status} by {by}")))
    TriageItem.update(**changes).where(TriageItem.id == item.id).execute()
    log.info("triage.closed" if status == TRIAGE_CLOSED else "triage.status_changed", item=item.id,
             **{"from": item.status}, to=status, by=by, via=via)


def delete(item_id, *, by, via, now):
    """Spam or phishing: the item and the raw bytes of its mail (every spooled copy) go; a tombstone stays."""
    item = item_or_refuse(item_id)
    processing = Processing.get_or_none(Processing.spool_id == item.spool_id)
    copies = [item.spool_id]
    if processing is not None:
        rows = Processing.select().where((Processing.message_id == processing.message_id)
                                         & (Processing.sha256 == processing.sha256))
        filed = [r for r in rows if r.action in FILED]
        if filed:
            raise Refused(f"inbound item {item_id}: its mail is filed in a ticket (spool entry {filed[0].spool_id}); "
                          "a ticket's history is not deleted")
        copies = sorted({item.spool_id, *(r.spool_id for r in rows)})
    spool = spool_entry(item.spool_id)
    TriageTombstone.insert(item_id=item.id, spool_id=item.spool_id,
                           message_id=(processing.message_id if processing else "") or "",
                           from_addr=item.from_addr or "", subject=item.subject or "",
                           sha256=spool.sha256 if spool else "", deleted_by=by, deleted_at=now).execute()
    drop_raw(copies)
    TriageItem.delete().where(TriageItem.id == item.id).execute()
    log.info("triage.deleted", item=item.id, spool_ids=copies, message_id=processing.message_id if processing else None,
             sender=item.from_addr, by=by, via=via)
