"""Last step, after `notify`: the blocks (`connector.store.blocks`) applied to
every planned mail, the one place they are checked.

Automatic mail (auto-responses, notices, auto-emails: `Outgoing.automatic`)
to a blocked address, or on a blocked ticket, is still planned, as an outbox
row `suppressed` with the block in its `blocked` column (so `connector why`
can say so); a recipient not blocked still gets it. A person's own mail
(an employee's reply, a copy) still goes to a blocked address; its row notes
the block. A ticket with more than LOOP_MAILS mails in LOOP_WINDOW is in a
loop: its automatic mail is suppressed and the ticket is blocked (planned in
`plan.blocks`, written by `apply`).

Reads: `plan.outgoing`, the blocks, the ticket's recent outbox rows.
Sets: `Outgoing.suppressed` / `Outgoing.blocked`, `plan.blocks`.
"""

import dataclasses

from connector.store import blocks
from connector.store.models import BLOCK_TICKET, Block

STEP = "blocks"
NONE, APPLIED = "none", "applied"


def _loop_block(ctx, now):
    """A ticket block planned now because of a loop, or None."""
    plan = ctx.plan
    if ctx.ticket is None or not plan.outgoing:
        return None
    if blocks.ticket_mail_count(ctx.ticket.id, now) + len(plan.outgoing) <= blocks.LOOP_MAILS:
        return None
    block = {"kind": BLOCK_TICKET, "target": str(plan.ticket_number), "reason": blocks.LOOP,
             "source": f"more than {blocks.LOOP_MAILS} mails on ticket #{plan.ticket_number} within "
                       f"{blocks.LOOP_WINDOW // 3600} h", "hours": blocks.LOOP_BLOCK_HOURS, "hard": False}
    plan.blocks.append(block)
    return Block(target=block["target"], kind=BLOCK_TICKET, reason=blocks.LOOP, source=block["source"],
                 created_at=now, until=now + blocks.LOOP_BLOCK_HOURS * blocks.HOUR)


def run(ctx):
    plan = ctx.plan
    if not plan.outgoing:
        return ctx.record(STEP, STEP, NONE)
    now = ctx.spool.received_at
    any_block = blocks.any_active(now)   # usually none: then no lookup per mail
    ticket_blocked = any_block and blocks.active(BLOCK_TICKET, plan.ticket_number or 0, now)
    loop = None if ticket_blocked else _loop_block(ctx, now)
    planned, applied = [], False
    for out in plan.outgoing:
        found = blocks.blocking(out.rcpt, plan.ticket_number if ctx.ticket is not None else None, now) \
            if any_block else {}
        if loop is not None:
            found = {**dict.fromkeys(out.rcpt, loop), **found}
        if not found:
            planned.append(out)
            continue
        applied = True
        note = "; ".join(dict.fromkeys(blocks.describe(b) for b in found.values()))
        if not out.automatic:          # a person's mail (copies of a possible loop too: their own budget)
            planned.append(dataclasses.replace(out, blocked=note))
            continue
        kept = [a for a in out.rcpt if a not in found]
        if kept:
            planned.append(dataclasses.replace(out, rcpt=kept))
        planned.append(dataclasses.replace(out, rcpt=[a for a in out.rcpt if a in found], suppressed=True,
                                           blocked=note))
        for address in found:
            plan.notes.append(f"{out.kind} to {address} suppressed: {found[address].reason} (blocked)")
    plan.outgoing = planned
    ctx.record(STEP, STEP, APPLIED if applied else NONE)
