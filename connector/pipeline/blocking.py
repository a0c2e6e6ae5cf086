"""Last step, after `notify`: the blocks (`connector.store.blocks`) applied to
every planned mail. `apply_blocks` is the one decision, used here and by the
auto-email planner for the events recorded outside the pipeline
(`connector.workqueue.auto_emails`: CLI, deadline timer, escalation).

Automatic mail (auto-responses, notices, auto-emails: `Outgoing.automatic`)
to a blocked address, or on a blocked ticket, is still planned, as an outbox
row `suppressed` with the block in its `blocked` column (so `connector why`
can say so); a recipient not blocked still gets it. A person's own mail
(an employee's reply, a copy) still goes to a blocked address; its row notes
the block. A ticket with more than LOOP_MAILS mails in LOOP_WINDOW (its
auto-emails counted like every other mail) is in a loop: its automatic mail
is suppressed and the ticket is blocked (planned in `plan.blocks`, written by
`apply`). The blocks this plan adds itself (a bounce's) count already: an
auto-email about a bounce never goes to the address that just bounced.

Reads: `plan.outgoing`, `plan.blocks`, the blocks, the ticket's recent outbox rows.
Sets: `Outgoing.suppressed` / `Outgoing.blocked`, `plan.blocks`.
"""

import dataclasses

from connector.log import get_logger
from connector.store import blocks
from connector.store.models import BLOCK_ADDRESS, BLOCK_TICKET, Block

log = get_logger("pipeline")

STEP = "blocks"
NONE, APPLIED = "none", "applied"


def _loop_block(ticket_id, ticket_number, count, now):
    """A ticket block planned now because of a loop (`count` more mails to queue), or None."""
    if ticket_id is None or not count:
        return None
    if blocks.ticket_mail_count(ticket_id, now) + count <= blocks.LOOP_MAILS:
        return None
    return {"kind": BLOCK_TICKET, "target": str(ticket_number), "reason": blocks.LOOP,
            "source": f"more than {blocks.LOOP_MAILS} mails on ticket #{ticket_number} within "
                      f"{blocks.LOOP_WINDOW // 3600} h", "hours": blocks.LOOP_BLOCK_HOURS, "hard": False}


def _as_block(planned, now):
    return Block(target=blocks.target_of(planned["kind"], planned["target"]), kind=planned["kind"],
                 reason=planned["reason"], source=planned["source"], created_at=now,
                 until=now + planned["hours"] * blocks.HOUR)


def apply_blocks(outgoing, ticket_id, ticket_number, now, pending=()):
    """(the mails with the blocks applied, the loop block to add or None, notes) for `outgoing`
    planned on ticket `ticket_id` (None: no ticket), `pending` the blocks about to be added."""
    any_block = bool(pending) or blocks.any_active(now)   # usually none: then no lookup per mail
    ticket_blocked = any_block and ticket_id is not None and blocks.active(BLOCK_TICKET, ticket_number, now)
    loop = None if ticket_blocked else _loop_block(ticket_id, ticket_number, len(outgoing), now)
    stops = [_as_block(b, now) for b in pending if b["kind"] == BLOCK_ADDRESS]
    if loop is not None:
        stops.append(_as_block(loop, now))
    planned, notes = [], []
    for out in outgoing:
        found = blocks.blocking(out.rcpt, ticket_number if ticket_id is not None else None, now) \
            if any_block else {}
        for block in stops:
            found = {**{a: block for a in out.rcpt if block.kind == BLOCK_TICKET or a.lower() == block.target},
                     **found}
        if not found:
            planned.append(out)
            continue
        note = "; ".join(dict.fromkeys(blocks.describe(b) for b in found.values()))
        if not out.automatic:          # a person's mail (copies of a possible loop too: their own budget)
            planned.append(dataclasses.replace(out, blocked=note))
            continue
        kept = [a for a in out.rcpt if a not in found]
        if kept:
            planned.append(dataclasses.replace(out, rcpt=kept))
        planned.append(dataclasses.replace(out, rcpt=[a for a in out.rcpt if a in found], suppressed=True,
                                           blocked=note))
        notes += [f"{out.kind} to {address} suppressed: {found[address].reason} (blocked)" for address in found]
    return planned, loop, notes


def write(planned, now):
    """Add the planned blocks (in the caller's transaction), one log line each."""
    for block in planned:
        block_id = blocks.add(block["kind"], block["target"], block["reason"], block["source"], now, block["hours"],
                              hard=block["hard"])
        log.info("block.added", block_id=block_id, **{k: block[k] for k in ("kind", "target", "reason", "hours")})


def run(ctx):
    plan = ctx.plan
    if not plan.outgoing:
        return ctx.record(STEP, STEP, NONE)
    ticket_id = ctx.ticket.id if ctx.ticket is not None else None
    planned, loop, notes = apply_blocks(plan.outgoing, ticket_id, plan.ticket_number, ctx.spool.received_at,
                                        plan.blocks)
    if loop is not None:
        plan.blocks.append(loop)
    plan.outgoing = planned
    plan.notes += notes
    ctx.record(STEP, STEP, APPLIED if loop is not None or any(o.blocked for o in planned) else NONE)
