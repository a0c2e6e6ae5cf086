"""A classify link, before `bounce`: a bounce of a mail we sent, attributed to
its outbox row by the VERP address it came to (`connector.mail.verp`),
else by the original Message-ID in the report (`connector.mail.bounce`).

An attributed bounce is kept as a closed triage item (`ignored_automatic`,
reason `bounce_attributed`, the failed recipients in its detail) and planned
whole, for `apply` to write (`plan.bounce`, `plan.blocks`):

- the outbox row becomes `bounced`, its `blocked` column the reason;
- the ticket gets a `delivery_failed` event;
- each failed recipient is blocked as `connector.store.blocks` says (hard,
  short, or nothing); a rejection about us (spamdetected, blocked, ...) blocks
  nobody: `bounce.sender_problem` is logged and `triage_notice_to` gets a notice;
- the ticket's employee recipients get a short notice that the customer did
  not receive the mail and why; never for a bounce of a notice. The notices'
  outbox rows are on the bounced row's ticket, when it had one.

A row bounces once: a later bounce of the same row (a bounce storm, a copy)
is attributed and kept too, and may extend the blocks, but writes no second
event and tells nobody again.

A delay warning is not a failure (nothing attributed). A bounce nobody can
attribute goes on to the `bounce` link (triage, as before).

Reads: the automatic verdict and its report, the envelope, the outbox row.
Sets: `plan.bounce`, `plan.blocks`, the notices in `plan.outgoing`.
"""

from connector.log import get_logger
from connector.mail.bounce import BOUNCE
from connector.pipeline import budget
from connector.pipeline.context import IGNORED_AUTOMATIC, Outgoing
from connector.store import blocks
from connector.store.models import NOTICE, OUTBOX_BOUNCED, TRIAGE_CLOSED, OutboxEntry, Ticket
from connector.store.views import ticket_recipients

log = get_logger("bounce")

LINK_ATTRIBUTED = "bounce_attributed"
REASON_ATTRIBUTED = "bounce_attributed"
VIA_VERP, VIA_MESSAGE_ID = "verp", "message_id"


def find_row(ctx):
    """(outbox row, how it was found) of the mail this bounce is about, or (None, None)."""
    outbox_id = ctx.services.verp.attributed(ctx.envelope or ctx.spool.rcpt_to)
    if outbox_id is not None:
        row = OutboxEntry.get_or_none(OutboxEntry.id == outbox_id)
        if row is not None:
            return row, VIA_VERP
    original = ctx.automatic.report.original_message_id if ctx.automatic.report else ""
    if original:
        row = (OutboxEntry.select().where(OutboxEntry.message_id == original).order_by(OutboxEntry.id.desc()).first())
        if row is not None:
            return row, VIA_MESSAGE_ID
    return None, None


def failed_recipients(report, row):
    """The report's failed recipients that the row was sent to (all of them when it names none of its own)."""
    failed = list(report.recipients if report else ())
    ours = {a.lower() for a in row.rcpt}
    mine = [r for r in failed if r.address.lower() in ours]
    return mine or failed


def run(ctx):
    """Attribute a bounce; True when it did (the plan is final)."""
    if ctx.automatic.kind != BOUNCE or ctx.hints.get("triage"):
        return False
    row, via = find_row(ctx)
    if row is None:
        return False
    report, settings = ctx.automatic.report, ctx.services.settings
    failed = failed_recipients(report, row)
    reason = next((r.reason for r in failed if r.reason), "") or "unknown"
    ticket = Ticket.get_or_none(Ticket.id == row.ticket_id) if row.ticket_id else None
    source = f"bounce in spool entry {ctx.spool.id} of outbox row {row.id}"
    plan = ctx.plan
    ctx.finish(IGNORED_AUTOMATIC, REASON_ATTRIBUTED, triage_status=TRIAGE_CLOSED, link=LINK_ATTRIBUTED,
               ticket_number=ticket.number if ticket else None,
               triage_detail=f"outbox row {row.id} (by {via}): {report.summary() if report else reason}")
    again = row.status == OUTBOX_BOUNCED
    plan.bounce = {"outbox_id": row.id, "via": via, "kind": row.kind, "reason": reason, "again": again,
                   "ticket_id": ticket.id if ticket else None, "ticket_number": ticket.number if ticket else None,
                   "recipients": [{"address": r.address, "reason": r.reason, "status": r.status, "hard": r.hard}
                                  for r in failed]}
    problems = []
    for recipient in failed:
        if recipient.reason in blocks.SENDER_PROBLEMS:
            problems.append(recipient)
            continue
        hours = blocks.hours_for(recipient.reason, settings.hard_block_hours)
        if hours:
            plan.blocks.append({"kind": blocks.BLOCK_ADDRESS, "target": recipient.address.lower(),
                                "reason": recipient.reason, "source": source, "hours": hours,
                                "hard": recipient.reason in blocks.HARD})
    if again:
        plan.notes.append(f"outbox row {row.id} bounced before: nobody told again")
    elif problems:
        plan.notes.append("a rejection about us: " + "; ".join(f"{r.address} {r.reason}" for r in problems))
        _notice(ctx, settings.triage_notice_to, f"Our mail was rejected ({problems[0].reason}): {row.subject}",
                _problem_text(row, problems))
    if row.kind != NOTICE and ticket is not None and not again:
        _, employees = ticket_recipients(ticket.id)
        _notice(ctx, employees, f"{ctx.services.tag(ticket.number)} Not delivered to "
                                f"{', '.join(r.address for r in failed) or ', '.join(row.rcpt)}",
                _failed_text(row, failed, reason, ctx.services.tag(ticket.number)))
    ctx.record("classify", LINK_ATTRIBUTED, f"outbox {row.id} by {via}")
    return True


def log_decision(plan):
    """What `apply` logs once the attribution is written."""
    bounce = plan.bounce
    log.info("bounce.attributed", outbox_id=bounce["outbox_id"], via=bounce["via"], reason=bounce["reason"],
             ticket=bounce["ticket_number"], recipients=[r["address"] for r in bounce["recipients"]])
    for recipient in bounce["recipients"]:
        if recipient["reason"] in blocks.SENDER_PROBLEMS:
            log.warning("bounce.sender_problem", outbox_id=bounce["outbox_id"], address=recipient["address"],
                        reason=recipient["reason"], status=recipient["status"])


def _notice(ctx, addresses, subject, body):
    to = [a for a in dict.fromkeys(addresses) if budget.notice_allowed(ctx, NOTICE, a)]
    if not to:
        return
    services = ctx.services
    notifications = services.settings.notifications_address
    ctx.plan.outgoing.append(Outgoing(
        NOTICE, to, to, from_name=services.settings.response_from_name, from_address=notifications,
        mail_from=notifications, subject=subject, body=body, message_id=services.signer.make_notice(),
        automatic=True, ticket_id=ctx.plan.bounce["ticket_id"]))   # the row's ticket (`outbox list`), when it had one


# What each bounce reason means, in words for the staff who read the notice (sisimai's word follows).
IN_WORDS = {
    "userunknown": "the address does not exist", "hostunknown": "the domain does not exist",
    "hasmoved": "the address has moved", "mailboxfull": "the mailbox is full",
    "systemfull": "the receiving server is out of space", "suspend": "the mailbox is suspended",
    "norelaying": "the receiving server does not take mail for this address",
    "expired": "it could not be delivered for days", "mesgtoobig": "the mail is too large for the recipient",
    "spamdetected": "it was taken for spam", "filtered": "the recipient's filter refused it",
    "rejected": "the recipient's server refused our sender", "blocked": "the recipient's server blocks ours",
    "policyviolation": "it broke the recipient's policy", "syntaxerror": "the address is malformed",
}


def in_words(reason, status):
    """'the address does not exist (userunknown, 5.1.1)'; a reason without words is given as it is."""
    words = IN_WORDS.get(reason)
    detail = ", ".join(x for x in (reason, status) if x)
    return f"{words} ({detail})" if words else detail


def _failed_text(row, failed, reason, tag):
    lines = [f"The customer did not receive this mail of {tag}:", "",
             f"  Subject: {row.subject}", f"  To: {', '.join(row.rcpt)}", "", "Why:"]
    lines += [f"  {r.address}: {in_words(r.reason or reason, r.status)}" for r in failed] or \
        [f"  {in_words(reason, '')}"]
    lines += ["", "Automatic mail to a dead or full address is held back for a while: "
                  "`connector why ADDRESS` says what happened and until when."]
    return "\n".join(lines) + "\n"


def _problem_text(row, problems):
    lines = [f"A mail we sent (outbox row {row.id}, \"{row.subject}\") was refused for a reason about us, "
             "not about the recipient:", ""]
    lines += [f"  {r.address}: {r.reason} {r.status} {r.reply_code}".rstrip() for r in problems]
    lines += ["", "The recipient is not blocked. Check our sending reputation, SPF/DKIM/DMARC, "
                  "reverse DNS and blocklists."]
    return "\n".join(lines) + "\n"
