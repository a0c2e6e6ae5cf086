"""Blocks of automatic mail (seed 002, issue 12): persistent, each with a
target (an address or a ticket), a reason, a source and an expiry.

Made when a bounce is attributed (`connector.pipeline.attribute` plans them,
`apply` writes them) and when one ticket sends more than LOOP_MAILS mails in
LOOP_WINDOW (a loop). Read where automatic mail is planned
(`connector.pipeline.blocking`): a blocked recipient's auto-response, notice
or auto-email becomes an outbox row `suppressed` with the reason; a person's
own mail still goes, its row noting the block. Lifted by `connector blocks
lift`, by the expiry, and (hard bounces) by a later successful delivery to
the address (`connector.outbound.delivery`).

    reason                                   blocks            for
    mailboxfull, systemfull                  the address       3 hours
    norelaying                               the address       3 hours
    userunknown, hostunknown, hasmoved       the address       [bounces] hard_block_hours
    > 100 mails on one ticket in 24 hours    the ticket        12 hours (reason `loop`)
    spamdetected, policyviolation, blocked,  nothing: about us, not the recipient
    authfailure, badreputation, requireptr,  (`bounce.sender_problem`, a notice to
    securityerror                            triage_notice_to)
"""

import peewee

from connector.store.models import (
    BLOCK_ACTIVE, BLOCK_ADDRESS, BLOCK_EXPIRED, BLOCK_LIFTED, BLOCK_TICKET, OUTBOX_SUPPRESSED, Block, OutboxEntry,
    database)

HOUR = 3600
SHORT_BLOCK_HOURS = 3
SHORT = ("mailboxfull", "systemfull", "norelaying")
HARD = ("userunknown", "hostunknown", "hasmoved")
SENDER_PROBLEMS = ("spamdetected", "policyviolation", "blocked", "authfailure", "badreputation", "requireptr",
                   "securityerror")
LOOP = "loop"
LOOP_MAILS = 100              # more than this many mails on one ticket ...
LOOP_WINDOW = 24 * HOUR       # ... within this window blocks the ticket ...
LOOP_BLOCK_HOURS = 12         # ... for this long


def hours_for(reason, hard_block_hours):
    """How long a bounce for `reason` blocks its address (None: it does not)."""
    if reason in SHORT:
        return SHORT_BLOCK_HOURS
    if reason in HARD:
        return hard_block_hours
    return None


def target_of(kind, target):
    return str(target).strip().lower() if kind == BLOCK_ADDRESS else str(int(target))


def add(kind, target, reason, source, now, hours, hard=False):
    """Block `target` until now + hours; an active block of it is extended (never shortened), not doubled."""
    target = target_of(kind, target)
    until = now + hours * HOUR
    current = active(kind, target, now)
    if current is not None:
        if until > current.until:
            Block.update(until=until, reason=reason, source=source, hard=hard).where(Block.id == current.id).execute()
        return current.id
    return Block.insert(target=target, kind=kind, reason=reason, source=source, created_at=now, until=until,
                        status=BLOCK_ACTIVE, hard=hard).execute()


def any_active(now):
    """Whether any block is in force: one indexed probe, so the pipeline's check costs
    nothing on the usual day without blocks."""
    return Block._meta.database.execute_sql(
        'SELECT 1 FROM "block" WHERE "status" = ? AND "until" > ? LIMIT 1', (BLOCK_ACTIVE, now)).fetchone() is not None


def active(kind, target, now):
    """The active block of `target` (`kind`), or None."""
    return (Block.select().where((Block.kind == kind) & (Block.target == target_of(kind, target))
                                 & (Block.status == BLOCK_ACTIVE) & (Block.until > now))
            .order_by(Block.until.desc()).first())


def blocking(addresses, ticket_number, now):
    """{address: the Block that stops automatic mail to it} for `addresses`; a ticket block stops all.
    One query for the ticket and all the addresses: the pipeline asks for every mail it plans."""
    lowered = {a.lower(): a for a in addresses}
    if not lowered:
        return {}
    matches = ((Block.kind == BLOCK_ADDRESS) & Block.target.in_(list(lowered)))
    if ticket_number:
        matches |= (Block.kind == BLOCK_TICKET) & (Block.target == str(int(ticket_number)))
    found = {}
    for block in Block.select().where(matches & (Block.status == BLOCK_ACTIVE) & (Block.until > now)):
        if block.kind == BLOCK_TICKET:
            return dict.fromkeys(addresses, block)
        found[lowered[block.target]] = block
    return found


def describe(block):
    """`x@y is blocked until <UTC> (userunknown, bounce of outbox row 5)`: the note on an outbox row."""
    import datetime
    until = datetime.datetime.fromtimestamp(block.until, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = f"ticket #{block.target}" if block.kind == BLOCK_TICKET else block.target
    return f"{what} is blocked until {until} ({block.reason}{', ' + block.source if block.source else ''})"


def status_of(block, now):
    return BLOCK_EXPIRED if block.status == BLOCK_ACTIVE and block.until <= now else block.status


def listing(now, include_all=False):
    """Blocks, newest first: the active ones (all of them with `include_all`)."""
    query = Block.select().order_by(Block.created_at.desc(), Block.id.desc())
    if not include_all:
        query = query.where((Block.status == BLOCK_ACTIVE) & (Block.until > now))
    return list(query)


def lift(target, now):
    """Lift the active blocks of `target` (an address, or a ticket number); returns how many."""
    target = str(target).strip().lower().lstrip("#")
    return (Block.update(status=BLOCK_LIFTED, until=now)
            .where((Block.target == target) & (Block.status == BLOCK_ACTIVE) & (Block.until > now)).execute())


def lift_hard(addresses, now):
    """A successful delivery to `addresses` lifts their hard-bounce blocks; returns the addresses lifted."""
    lowered = [a.lower() for a in addresses]
    if not lowered or not any_active(now):   # the usual case: no block at all, one probe
        return []
    query = Block.select(Block.target).where(
        (Block.kind == BLOCK_ADDRESS) & (Block.target.in_(lowered)) & Block.hard
        & (Block.status == BLOCK_ACTIVE) & (Block.until > now))
    lifted = sorted({b.target for b in query})
    if lifted:
        with database.atomic():
            Block.update(status=BLOCK_LIFTED, until=now).where(
                (Block.kind == BLOCK_ADDRESS) & (Block.target.in_(lifted)) & Block.hard
                & (Block.status == BLOCK_ACTIVE)).execute()
    return lifted


def recent_mail(address, limit):
    """The outbox rows sent (or planned) to `address` lately, newest first (`connector why`)."""
    needle = '"' + address.replace('"', '') + '"'
    return list(OutboxEntry.select(*[f for f in OutboxEntry._meta.sorted_fields if f.name != "raw"])
                .where(peewee.fn.lower(OutboxEntry.rcpt).contains(needle.lower()))
                .order_by(OutboxEntry.id.desc()).limit(limit))


def ticket_mail_count(ticket_id, now, at_most=LOOP_MAILS + 1):
    """Mails queued on one ticket within LOOP_WINDOW (suppressed ones not counted), counted no
    further than `at_most`: the cost is bounded by the loop limit, not by how much was sent."""
    recent = (OutboxEntry.select(OutboxEntry.id)
              .where((OutboxEntry.ticket == ticket_id) & (OutboxEntry.created_at > now - LOOP_WINDOW)
                     & (OutboxEntry.status != OUTBOX_SUPPRESSED)).limit(at_most))
    return recent.count()
