"""Staff commands by mail (issue 11): `#take`, `#forward ...`, `#create-ticket`, ...

Where it stands in the flow:

    sender -> reference -> read (here) -> route -> extract -> settle (here) -> distribute
    apply: run (here), inside the filing transaction

`read` takes the command lines at the top of a mail from an active,
authenticated employee (`#` + word, one per line, blank lines between them
allowed, before any other text). A reply to a New Inbound Message Notice
(threaded by the notice's signed Message-ID) acts on that triage item: the
mail is decided `staff_command` here and filed nowhere. Otherwise the
commands act on the ticket the mail refers to, and `route` decides as for any
employee mail; `settle` then files the rest of the reply as usual (the copy
carries no command line), Not Public with `#internal`, and a mail with only
commands as an internal note of what was done, distributed to nobody.

`run` executes the commands in order inside a savepoint: the first refusal
undoes the ones before it and the rest do not run, so a mail does all it
asks or nothing. A line that is no command of `COMMANDS`, or whose
arguments do not fit, is refused before anything runs (never guessed), and
the mail is then filed Not Public whatever else it says. The outcome is
mailed back to the sender from the notifications address
(`staff_command_result.txt.j2`, `Auto-Submitted: auto-replied`).
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from email.message import EmailMessage

from connector.log import get_logger
from connector.mail.automatic import own_mail
from connector.outbound import compose
from connector.pipeline.cli_mail import CLI_INTAKE, NOTE, kind_of
from connector.pipeline.context import FOLLOW_UP, INTERNAL, STAFF_COMMAND
from connector.store import events
from connector.store.models import OutboxEntry, Ticket, TriageItem, database
from connector.workqueue import inbox as inbox_actions
from connector.workqueue.errors import Refused

log = get_logger("pipeline")

COMMAND_RE = re.compile(r"^#([A-Za-z][A-Za-z0-9_-]*)(?:[ \t]+(.*?))?[ \t]*$")

# Reasons of the decisions this module makes.
R_NOTICE_REPLY = "reply_to_notice"
R_COMMANDS_ONLY = "staff_commands"
R_INTERNAL_COMMAND = "internal_command"
R_REFUSED_COMMANDS = "refused_commands"
R_CLI_NOTE = "cli_note"

# What a command acts on.
ON_TICKET = "ticket"
ON_ITEM = "inbound item"
ON_FILING = "filing"   # how this mail itself is filed (#internal)

REFILED_HINT = "triage"  # set by connector.workqueue.triage when it files a triage item's mail again
NOT_RUN = "not run"
KIND = "command_reply"  # the outbox kind of the result mailed back
TEMPLATE = "staff_command_result.txt.j2"


@dataclass(frozen=True)
class Arg:
    name: str
    convert: object = str
    rest: bool = False       # takes the rest of the line (spaces included)
    optional: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    on: str
    handler: object          # handler(target, args, Act) -> confirmation line
    args: tuple = ()

    @property
    def usage(self):
        parts = [a.name.upper() + ("..." if a.rest else "") for a in self.args]
        parts = [f"[{p}]" if a.optional else p for p, a in zip(parts, self.args)]
        return " ".join([f"#{self.name}"] + parts)


@dataclass(frozen=True)
class Act:
    """Who acts, when, and what the triage actions file with (they run the pipeline again)."""

    by: str
    now: float
    services: object
    templates: object


@dataclass
class Line:
    text: str
    command: Command = None
    args: dict = field(default_factory=dict)
    outcome: str = ""
    done: bool = False


@dataclass
class Plan:
    """The commands of one mail and what became of them."""

    lines: list
    on: str = ON_TICKET
    item_id: int = None      # ON_ITEM: the triage item the answered notice was about
    refusal: str = ""        # refused before anything runs (unknown command, wrong target)
    copy: bytes = None       # the distributed copy without the command lines (apply sends it)

    @property
    def internal(self):
        return any(line.command and line.command.on == ON_FILING for line in self.lines)

    @property
    def ok(self):
        return not self.refusal and all(line.done for line in self.lines)


def due_timestamp(text):
    """A due date (`2026-12-05`: the end of that day, UTC; or an ISO 8601 date-time, naive
    meaning UTC) as a timestamp."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(f"{text!r} is not a date (write it like 2026-12-05 or 2026-12-05T17:00+01:00)") from None
    if len(text) <= 10:
        moment = datetime.combine(moment.date(), time(23, 59, 59))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def ticket_argument(text):
    if not text.isdigit():
        raise Refused(f"{text!r} is not a ticket number")
    return int(text)


def _entry(ticket, act):
    return inbox_actions.entry_for(ticket.number, by=act.by)


def _take(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.take(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"ticket {ticket.number} in {entry.inbox} is yours"


def _complete(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.complete(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"ticket {ticket.number} completed in {entry.inbox}"


def _cancel(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.cancel(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now, message=args.get("message"))
    return f"ticket {ticket.number} cancelled in {entry.inbox}"


def _forward(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.forward(entry.id, to=args["inbox"], due_type=args["due_type"], due_at=args["date"], by=act.by,
                          via=events.VIA_MAIL, now=act.now, message=args.get("message"))
    due = datetime.fromtimestamp(args["date"], timezone.utc).isoformat(timespec="minutes")
    return f"ticket {ticket.number} forwarded from {entry.inbox} to {args['inbox']} ({args['due_type']} due {due})"


def _add(ticket, args, act):
    inbox_actions.add(ticket.number, args["name"], by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"ticket {ticket.number} added to inbox {args['name']}"


def _status(ticket, args, act):
    value, current = args["value"], Ticket.get_by_id(ticket.id).status
    if value == current:
        return f"ticket {ticket.number} is {value} already"
    Ticket.update(status=value, updated_at=act.now).where(Ticket.id == ticket.id).execute()
    detail = {"from": current, "to": value}
    events.record(ticket.id, events.STATUS_CHANGED, at=act.now, by=act.by, via=events.VIA_MAIL, detail=detail)
    log.info("ticket.changed", ticket=ticket.number, change=events.STATUS_CHANGED, by=act.by, via=events.VIA_MAIL,
             **detail)
    return f"ticket {ticket.number}: status {current} -> {value}"


def _internal(ticket, args, act):
    return "this mail is filed Not Public (employees only)"


def triage_actions():
    """`connector.workqueue.triage`, imported when first used: it runs the pipeline itself,
    and the pipeline imports this module."""
    from connector.workqueue import triage
    return triage


def _create_ticket(item_id, args, act):
    number = triage_actions().create_ticket(item_id, by=act.by, via=events.VIA_MAIL, now=act.now,
                                          services=act.services, templates=act.templates)
    return f"inbound item {item_id}: ticket {number} created"


def _attach(item_id, args, act):
    triage_actions().attach(item_id, args["ticket"], by=act.by, via=events.VIA_MAIL, now=act.now,
                          services=act.services, templates=act.templates)
    return f"inbound item {item_id} attached to ticket {args['ticket']}"


def _close(item_id, args, act):
    triage_actions().close(item_id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"inbound item {item_id} closed"


def _delete(item_id, args, act):
    triage_actions().delete(item_id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"inbound item {item_id} deleted"


MESSAGE = Arg("message", rest=True, optional=True)
COMMANDS = {c.name: c for c in (
    Command("take", ON_TICKET, _take),
    Command("complete", ON_TICKET, _complete),
    Command("cancel", ON_TICKET, _cancel, (MESSAGE,)),
    Command("forward", ON_TICKET, _forward, (Arg("inbox"), Arg("due_type"), Arg("date", due_timestamp), MESSAGE)),
    Command("status", ON_TICKET, _status, (Arg("value", rest=True),)),
    Command("inbox", ON_TICKET, _add, (Arg("name", rest=True),)),
    Command("internal", ON_FILING, _internal),
    Command("create-ticket", ON_ITEM, _create_ticket),
    Command("attach", ON_ITEM, _attach, (Arg("ticket", ticket_argument),)),
    Command("close", ON_ITEM, _close),
    Command("delete", ON_ITEM, _delete),
)}


def split_commands(text):
    """(command lines, the text after them): the leading `#word` lines of `text`."""
    lines = (text or "").splitlines()
    found, index = [], 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if not COMMAND_RE.match(stripped):
            return found, "\n".join(lines[index:])
        found.append(stripped)
    return found, ""


def parse_line(text):
    """A Line with its command and converted arguments, or its refusal as `outcome`."""
    match = COMMAND_RE.match(text)
    name, words = match.group(1).lower(), (match.group(2) or "").split()
    line = Line(text)
    command = COMMANDS.get(name)
    if command is None:
        line.outcome = f"unknown command #{name} (known: {', '.join('#' + n for n in COMMANDS)})"
        return line
    values = {}
    try:
        for position, arg in enumerate(command.args):
            if position >= len(words):
                if not arg.optional:
                    raise Refused(f"missing {arg.name.upper()} (write: {command.usage})")
                break
            raw = " ".join(words[position:]) if arg.rest else words[position]
            values[arg.name] = arg.convert(raw)
        if len(words) > len(command.args) and not (command.args and command.args[-1].rest):
            raise Refused(f"too many words (write: {command.usage})")
    except Refused as exc:
        line.outcome = str(exc)
        return line
    line.command, line.args = command, values
    return line


def answered_item(ctx):
    """The triage item a notice this mail answers was about: (answers a notice, item id or None)."""
    signer = ctx.services.signer
    notices = [m for m in ctx.parsed.in_reply_to + ctx.parsed.references if signer.is_notice(m)]
    if not notices:
        return False, None
    causes = [o.cause_id for o in OutboxEntry.select(OutboxEntry.cause_id)
              .where(OutboxEntry.message_id.in_(notices) & OutboxEntry.cause_id.is_null(False))]
    item = (TriageItem.select(TriageItem.id).where(TriageItem.spool_id.in_(causes))
            .order_by(TriageItem.id.desc()).first()) if causes else None
    return True, item.id if item else None


def read(ctx):
    """Step between `reference` and `route`: the commands of an employee's mail."""
    if not ctx.sender.is_staff or ctx.automatic.is_automatic or ctx.spool.intake == CLI_INTAKE \
            or own_mail(ctx.parsed, ctx.services.signer) or ctx.hints.get(REFILED_HINT):
        return  # our own mail come back never commands; a refiled triage item's were answered already
    found, _ = split_commands(ctx.parsed.text)
    if not found:
        return
    plan = ctx.commands = Plan([parse_line(text) for text in found])
    notice, plan.item_id = answered_item(ctx)
    if notice:
        plan.on = ON_ITEM
        if plan.item_id is None:
            plan.refusal = "the notice this mail answers names no inbound item that still exists"
        ctx.finish(STAFF_COMMAND, R_NOTICE_REPLY, distribute=False)
    wrong = [line for line in plan.lines if line.command and line.command.on not in (plan.on, ON_FILING)]
    for line in wrong:
        line.outcome = (f"#{line.command.name} acts on an inbound item: reply to its New Inbound Message Notice"
                        if line.command.on == ON_ITEM else
                        f"#{line.command.name} acts on a ticket: this mail answers a New Inbound Message Notice")
    if not plan.refusal and any(not line.command or line in wrong for line in plan.lines):
        plan.refusal = "nothing was done: a command line is refused"


def settle(ctx):
    """Step between `extract` and `distribute`: how a filed command mail itself is filed."""
    plan = ctx.commands
    if ctx.action not in (FOLLOW_UP, INTERNAL):
        return
    if plan is None:
        if kind_of(ctx) == NOTE:  # `tickets note`: Not Public, to the employee recipients
            ctx.action, ctx.reason, ctx.public, ctx.internal = INTERNAL, R_CLI_NOTE, False, True
        return
    ctx.reply_text = split_commands(ctx.reply_text)[1].strip()
    if not ctx.reply_text:
        ctx.action, ctx.reason, ctx.distribute = INTERNAL, R_COMMANDS_ONLY, False
    elif plan.internal or plan.refusal:
        ctx.action, ctx.reason = INTERNAL, R_INTERNAL_COMMAND if plan.internal else R_REFUSED_COMMANDS
    if ctx.action == INTERNAL:
        ctx.public, ctx.internal, ctx.set_inbox = False, True, False
    if ctx.distribute:
        plan.copy = copy_without_commands(ctx.parsed)


def copy_without_commands(parsed):
    """The mail as staff and customers get it: its text after the command lines (as plain
    text: HTML cannot be cut safely), with its attachments."""
    _, rest = split_commands(parsed.text)
    copy = EmailMessage()
    copy.set_content(rest.strip() + "\n", cte="quoted-printable")
    for part in parsed.msg.walk():
        if part.is_multipart() or part.get_content_disposition() != "attachment":
            continue
        data = part.get_payload(decode=True) or b""
        maintype, subtype = part.get_content_type().split("/", 1)
        copy.add_attachment(data, maintype=maintype, subtype=subtype, filename=part.get_filename())
    return copy.as_bytes()


def run(ctx, ticket, templates, now):
    """Apply's part, in the filing transaction: execute the plan; returns the outbox row
    of the result mailed back to the sender (without our loop marker: apply adds it)."""
    plan, by = ctx.commands, ctx.sender.staff.email
    target = plan.item_id if plan.on == ON_ITEM else ticket
    if not plan.refusal and plan.on == ON_TICKET and (ticket is None or ctx.action not in (FOLLOW_UP, INTERNAL)):
        plan.refusal = _not_filed(ctx, ticket)
    if not plan.refusal:
        _execute(plan, target, Act(by, now, ctx.services, templates))
    if plan.on == ON_TICKET and ctx.reason == R_COMMANDS_ONLY:
        ctx.reply_text = summary(plan)  # the internal note of what was done
    log.info("staff.commands", by=by, on=plan.on, ticket=ticket.number if ticket else None, item=plan.item_id,
             ok=plan.ok, commands=[line.text for line in plan.lines], refusal=plan.refusal or None,
             outcomes=[line.outcome or NOT_RUN for line in plan.lines])
    return _reply_row(ctx, plan, ticket if plan.on == ON_TICKET else None, templates, now)


def _not_filed(ctx, ticket):
    """Why ticket commands did not run: the mail was not filed on a ticket."""
    if ticket is not None:
        return (f"nothing was done: this mail was not filed on ticket {ticket.number} ({ctx.reason}); "
                f"send commands to {ctx.services.settings.public_address}")
    if ctx.ticket_number:
        return f"nothing was done: there is no ticket {ctx.ticket_number}"
    return "nothing was done: this mail refers to no ticket (keep the ticket tag in the subject)"


def _reply_row(ctx, plan, ticket, templates, now):
    services, parsed = ctx.services, ctx.parsed
    to = ctx.sender.address
    message_id = services.signer.make(ticket.number) if ticket else services.signer.make_notice()
    values = {
        "ok": plan.ok, "refusal": plan.refusal, "summary": summary(plan),
        "lines": [{"text": line.text, "outcome": line.outcome or NOT_RUN, "done": line.done} for line in plan.lines],
        "ticket": {"number": ticket.number, "tag": services.tag(ticket.number), "subject": ticket.subject}
        if ticket else None,
        "item": plan.item_id,
        "message": {"subject": parsed.subject, "message_id": parsed.message_id},
        "settings": {"public_address": services.settings.public_address,
                     "notifications_address": services.settings.notifications_address},
    }
    subject, raw = compose.command_result(parsed, to, services, templates, TEMPLATE, values, message_id)
    return {"ticket": ticket.id if ticket else None, "cause_id": ctx.spool.id, "kind": KIND,
            "mail_from": services.settings.notifications_address, "rcpt": [to], "to": [to], "cc": [], "bcc": [],
            "subject": subject, "message_id": message_id, "raw": raw, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now}


def _execute(plan, target, act):
    current = None
    try:
        with database.atomic():  # a savepoint: a refusal undoes the commands before it
            for current in plan.lines:
                current.outcome, current.done = current.command.handler(target, current.args, act), True
    except Refused as exc:
        current.outcome = f"refused: {exc}"
        for line in plan.lines:
            if line.done:
                line.done, line.outcome = False, f"undone ({line.outcome}): a later command was refused"
            elif line is not current and not line.outcome:
                line.outcome = "not run: an earlier command was refused"
        plan.refusal = "nothing was done: a command was refused"


def summary(plan):
    """What the mail did, one line per command (the reply mail's and the note's text)."""
    lines = [plan.refusal] if plan.refusal else []
    lines += [f"{line.text}\n  {line.outcome or NOT_RUN}" for line in plan.lines]
    return "\n".join(lines)
