"""Staff commands by mail (issue 11): `#take`, `#forward ...`, `#create-ticket`, ...

Where it stands in the flow:

    sender -> reference -> read (here) -> route -> extract -> settle (here) -> distribute
    finally: reply (here), notify          apply: run (here), in the filing transaction

`read` takes the command lines at the top of a mail from an active,
authenticated employee (`#` + word, one per line, blank lines between them
allowed, before any other text) into `plan.commands` (a `Commands`). A reply
to a New Inbound Message Notice (threaded by the notice's signed Message-ID)
acts on that triage item: the mail is decided `staff_command` here and filed
nowhere. Otherwise the commands act on the ticket the mail refers to, and
`route` decides as for any employee mail; `settle` then files the rest of
the reply as usual (the copy carries no command line, `Commands.copy`), Not
Public with `#internal`, and a mail with only commands as an internal note
of what was done, distributed to nobody.

`reply` plans the result mailed back to the sender: one COMMAND_REPLY
`Outgoing` from the notifications address (`staff_command_result.txt.j2`,
`Auto-Submitted: auto-replied`), whole (envelope, To, From, Message-ID,
subject, text). A mail refused before anything runs (a line that is no
command of `COMMANDS` or whose arguments do not fit, never guessed; a
command for the wrong target; a mail not filed on its ticket) runs nothing,
and its reply is final as planned. Otherwise the text says what is to run.

`run` (apply's part) executes the commands in order inside a savepoint: the
first refusal undoes the ones before it and the rest do not run, so a mail
does all it asks or nothing. What the store says is known only then (the
entry was taken meanwhile, the inbox has no open entry, a due date passed),
so `run` renders the planned reply's subject and text again from the
outcomes, through `_render`, the one place that text is made; nothing else
of the planned mail changes. A refused mail is filed Not Public whatever
else it says.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage

from connector.log import get_logger
from connector.mail.automatic import own_mail
from connector.pipeline.cli_mail import CLI_INTAKE, NOTE, kind_of
from connector.pipeline.context import FOLLOW_UP, INTERNAL, STAFF_COMMAND, Outgoing
from connector.settings import inboxes as inbox_config
from connector.store import events
from connector.store.filing import savepoint, set_ticket_status, ticket_status, triage_item_of_notices
from connector.store.models import COMMAND_REPLY, DISTRIBUTION
from connector.workqueue import inbox as inbox_actions
from connector.workqueue.errors import Refused

log = get_logger("pipeline")

COMMAND_RE = re.compile(r"^#([A-Za-z][A-Za-z0-9_-]*)(?:[ \t]+(.*?))?[ \t]*$")

# Reasons of the decisions this module makes.
REASON_NOTICE_REPLY = "reply_to_notice"
REASON_COMMANDS_ONLY = "staff_commands"
REASON_INTERNAL_COMMAND = "internal_command"
REASON_REFUSED_COMMANDS = "refused_commands"
REASON_CLI_NOTE = "cli_note"

# What a command acts on.
ON_TICKET = "ticket"
ON_ITEM = "inbound item"
ON_FILING = "filing"   # how this mail itself is filed (#internal)

STEP = "commands"
REFILED_HINT = "triage"  # set by connector.workqueue.triage when it files a triage item's mail again
NOT_RUN = "not run"
TO_RUN = "to run"        # a planned line's outcome until `run` executes it
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
    """Who acts, when, and what the actions need: the inboxes' settings, and what the
    triage actions file with (they run the pipeline again)."""

    by: str
    now: float
    services: object
    templates: object

    @property
    def settings(self):
        return self.services.settings


@dataclass
class Line:
    text: str
    command: Command = None
    args: dict = field(default_factory=dict)
    outcome: str = ""
    done: bool = False


@dataclass
class Commands:
    """The commands of one mail (`plan.commands`) and what became of them."""

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

    def summary(self):
        """The commands as `replay --dry-run --json` prints them (`commands`)."""
        return {"on": self.on, "item": self.item_id, "refusal": self.refusal or None,
                "lines": [{"text": line.text, "command": line.command.name if line.command else None,
                           "args": line.args, "outcome": outcome(self, line)} for line in self.lines]}


def due_date(text):
    """A due date's form (`inbox.parse_due`: ISO 8601, a date alone is the end of that
    day, UTC) as epoch seconds; whether it is past is checked when the command runs."""
    return inbox_actions.parse_due(text, now=0)


def ticket_argument(text):
    if not text.isdigit():
        raise Refused(f"{text!r} is not a ticket number")
    return int(text)


def _entry(ticket, act):
    return inbox_actions.entry_for(ticket.number, by=act.by, settings=act.settings)


def _take(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.take(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now, settings=act.settings)
    return f"ticket {ticket.number} in {entry.inbox} is yours"


def _complete(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.complete(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now, settings=act.settings)
    return f"ticket {ticket.number} completed in {entry.inbox}"


def _cancel(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.cancel(entry.id, by=act.by, via=events.VIA_MAIL, now=act.now, message=args.get("message"),
                         settings=act.settings)
    return f"ticket {ticket.number} cancelled in {entry.inbox}"


def _forward(ticket, args, act):
    entry = _entry(ticket, act)
    inbox_actions.forward(entry.id, to=args["inbox"], due_type=args["due_type"], due_at=args["date"], by=act.by,
                          via=events.VIA_MAIL, now=act.now, message=args.get("message"), settings=act.settings)
    due = datetime.fromtimestamp(args["date"], timezone.utc).isoformat(timespec="minutes")
    return f"ticket {ticket.number} forwarded from {entry.inbox} to {args['inbox']} ({args['due_type']} due {due})"


def _add(ticket, args, act):
    inbox_actions.add(ticket.number, args["name"], by=act.by, via=events.VIA_MAIL, now=act.now,
                      settings=act.settings)
    return f"ticket {ticket.number} added to inbox {args['name']}"


def _status(ticket, args, act):
    value, current = args["value"], ticket_status(ticket.id)
    if value == current:
        return f"ticket {ticket.number} is {value} already"
    left_inbox = set_ticket_status(ticket.id, value, act.now)
    changes = [(events.STATUS_CHANGED, {"from": current, "to": value})]
    if left_inbox:
        changes.append((events.INBOX_FLAG_CHANGED, {"in_inbox": False}))
    for name, detail in changes:
        events.record(ticket.id, name, at=act.now, by=act.by, via=events.VIA_MAIL, detail=detail)
        log.info("ticket.changed", ticket=ticket.number, change=name, by=act.by, via=events.VIA_MAIL, **detail)
    return f"ticket {ticket.number}: status {current} -> {value}" + (", out of the Inbox" if left_inbox else "")


def _internal(ticket, args, act):
    return "this mail is filed Not Public (employees only)"


def triage_actions(act):
    """`connector.workqueue.triage`, as the wiring gave it to the services (it runs the
    pipeline itself, and the pipeline imports this module)."""
    if act.services.triage is None:
        raise Refused("this process runs no triage action (a mail command needs the daemon's worker)")
    return act.services.triage


def _create_ticket(item_id, args, act):
    number = triage_actions(act).create_ticket(item_id, by=act.by, via=events.VIA_MAIL, now=act.now,
                                          services=act.services, templates=act.templates)
    return f"inbound item {item_id}: ticket {number} created"


def _attach(item_id, args, act):
    triage_actions(act).attach(item_id, args["ticket"], by=act.by, via=events.VIA_MAIL, now=act.now,
                          services=act.services, templates=act.templates)
    return f"inbound item {item_id} attached to ticket {args['ticket']}"


def _close(item_id, args, act):
    triage_actions(act).close(item_id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"inbound item {item_id} closed"


def _delete(item_id, args, act):
    triage_actions(act).delete(item_id, by=act.by, via=events.VIA_MAIL, now=act.now)
    return f"inbound item {item_id} deleted"


MESSAGE = Arg("message", rest=True, optional=True)
COMMANDS = {c.name: c for c in (
    Command("take", ON_TICKET, _take),
    Command("complete", ON_TICKET, _complete),
    Command("cancel", ON_TICKET, _cancel, (MESSAGE,)),
    Command("forward", ON_TICKET, _forward, (Arg("inbox"), Arg("due_type"), Arg("date", due_date), MESSAGE)),
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
    return True, triage_item_of_notices(notices)


def read(ctx):
    """Step between `reference` and `route`: the commands of an employee's mail.

    Reads: the sender, the parsed text and threading, the notices we sent (outbox).
    Sets: `plan.commands`; for a reply to a notice the decision (`staff_command`).
    """
    if not ctx.sender.is_staff or ctx.automatic.is_automatic or ctx.spool.intake == CLI_INTAKE \
            or own_mail(ctx.parsed, ctx.services.signer) or ctx.hints.get(REFILED_HINT):
        return ctx.record(STEP, "read", "none")  # our own mail come back never commands; a refiled item's ran
    found, _ = split_commands(ctx.parsed.text)
    if not found:
        return ctx.record(STEP, "read", "none")
    commands = ctx.plan.commands = Commands([parse_line(text) for text in found])
    notice, commands.item_id = answered_item(ctx)
    if notice:
        commands.on = ON_ITEM
        if commands.item_id is None:
            commands.refusal = "the notice this mail answers names no inbound item that still exists"
        ctx.finish(STAFF_COMMAND, REASON_NOTICE_REPLY)
    wrong = [line for line in commands.lines if line.command and line.command.on not in (commands.on, ON_FILING)]
    for line in wrong:
        line.outcome = (f"#{line.command.name} acts on an inbound item: reply to its New Inbound Message Notice"
                        if line.command.on == ON_ITEM else
                        f"#{line.command.name} acts on a ticket: this mail answers a New Inbound Message Notice")
    if not commands.refusal and any(not line.command or line in wrong for line in commands.lines):
        commands.refusal = "nothing was done: a command line is refused"
    ctx.record(STEP, "read", f"{len(commands.lines)} on {commands.on}")


def settle(ctx):
    """Step between `extract` and `distribute`: how a filed command mail itself is filed.

    Reads: the plan so far, `plan.commands`, the CLI hint. Sets: `plan.action` (INTERNAL for
    a note, `#internal`, a refusal or commands only), `reason`, `public`, `internal`,
    `set_inbox`, `distribute`, `reply_text` (without the command lines), `commands.copy`.
    """
    plan, commands = ctx.plan, ctx.plan.commands
    if plan.action not in (FOLLOW_UP, INTERNAL):
        return
    if commands is None:
        if kind_of(ctx) == NOTE:  # `tickets note`: Not Public, to the employee recipients
            plan.action, plan.reason, plan.public, plan.internal = INTERNAL, REASON_CLI_NOTE, False, True
            ctx.record(STEP, "settle", REASON_CLI_NOTE)
        return
    plan.reply_text = split_commands(plan.reply_text)[1].strip()
    if not plan.reply_text:
        plan.action, plan.reason, plan.distribute = INTERNAL, REASON_COMMANDS_ONLY, False
    elif commands.internal or commands.refusal:
        plan.action, plan.reason = INTERNAL, REASON_INTERNAL_COMMAND if commands.internal else REASON_REFUSED_COMMANDS
    if plan.action == INTERNAL:
        plan.public, plan.internal, plan.set_inbox = False, True, False
    if plan.distribute:
        commands.copy = copy_without_commands(ctx.parsed)
    ctx.record(STEP, "settle", plan.reason)


HANDING = {"forward": "inbox", "inbox": "name"}  # commands that hand the ticket to an inbox: its argument


def handed_to(commands, settings):
    """The members of the inboxes this mail's commands hand the ticket to (`#forward`,
    `#inbox`): the text of such a mail is usually written for them ("Jane, the customer
    paid twice"), so `distribute` sends them its copy as well (`run` takes them off again
    when the commands are refused as they run). [] for a mail refused before."""
    if commands is None or commands.refusal:
        return []
    configured = inbox_config.of(settings)
    members = []
    for line in commands.lines:
        argument = HANDING.get(line.command.name) if line.command else None
        inbox = configured.get(line.args.get(argument)) if argument else None
        members += inbox.members if inbox else ()
    return members


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


def reply(ctx):
    """Run for every decision (before `notify`): the result mail of this mail's commands.

    Reads: `plan.commands`, the decision (a ticket command runs only on a mail filed on
    its ticket). Sets: one COMMAND_REPLY in `plan.outgoing`; `commands.refusal` when the
    mail is not filed where its commands act.
    """
    commands, plan, services = ctx.plan.commands, ctx.plan, ctx.services
    if commands is None:
        return
    if not commands.refusal and commands.on == ON_TICKET and (ctx.ticket is None
                                                               or plan.action not in (FOLLOW_UP, INTERNAL)):
        commands.refusal = _not_filed(ctx)
    on_ticket = commands.on == ON_TICKET and ctx.ticket is not None
    to, notifications = ctx.sender.address, services.settings.notifications_address
    out = Outgoing(COMMAND_REPLY, [to], [to], from_name=services.settings.response_from_name,
                   from_address=notifications, mail_from=notifications, template=TEMPLATE,
                   message_id=services.signer.make(ctx.ticket.number) if on_ticket else services.signer.make_notice())
    _render(ctx, out, commands)
    plan.outgoing.append(out)
    ctx.record(STEP, "reply", "refused" if commands.refusal else TO_RUN)


def _render(ctx, out, commands):
    """The reply's subject and text from the commands' outcomes (planned or run)."""
    services, parsed, ticket = ctx.services, ctx.parsed, ctx.ticket
    on_ticket = commands.on == ON_TICKET and ticket is not None
    values = {
        "ok": not commands.refusal, "refusal": commands.refusal, "summary": summary(commands),
        "lines": [{"text": line.text, "outcome": outcome(commands, line), "done": line.done}
                  for line in commands.lines],
        "ticket": {"number": ticket.number, "tag": services.tag(ticket.number), "subject": ticket.subject}
        if on_ticket else None,
        "item": commands.item_id,
        "message": {"subject": parsed.subject, "message_id": parsed.message_id},
        "settings": {"public_address": services.settings.public_address,
                     "notifications_address": services.settings.notifications_address},
    }
    out.subject, out.body = ctx.templates.render(TEMPLATE, **values)
    out.subject = out.subject or parsed.subject


def run(ctx, now):
    """Apply's part, in the filing transaction: execute `plan.commands` (unless refused
    before running) and render the planned reply again from the outcomes."""
    commands, ticket, by = ctx.plan.commands, ctx.ticket, ctx.sender.staff.email
    if not commands.refusal:
        target = commands.item_id if commands.on == ON_ITEM else ticket
        _execute(commands, target, Act(by, now, ctx.services, ctx.templates))
        out = next(o for o in ctx.plan.outgoing if o.kind == COMMAND_REPLY)
        _render(ctx, out, commands)
    if not commands.ok and ctx.plan.handed_only:  # the hand-over did not happen: its inbox gets no copy
        _uncopy(ctx.plan, set(ctx.plan.handed_only))
    if commands.on == ON_TICKET and ctx.plan.reason == REASON_COMMANDS_ONLY:
        ctx.plan.reply_text = summary(commands)  # the internal note of what was done
    log.info("staff.commands", by=by, on=commands.on, ticket=ticket.number if ticket else None,
             item=commands.item_id, ok=commands.ok, commands=[line.text for line in commands.lines],
             refusal=commands.refusal or None, outcomes=[outcome(commands, line) for line in commands.lines])


def _uncopy(plan, addresses):
    """Take `addresses` off the planned copies (a copy left with nobody is not sent)."""
    for out in plan.outgoing:
        if out.kind == DISTRIBUTION:
            out.rcpt, out.to, out.cc, out.bcc = ([a for a in group if a not in addresses]
                                                 for group in (out.rcpt, out.to, out.cc, out.bcc))
    plan.outgoing = [out for out in plan.outgoing if out.rcpt]


def _not_filed(ctx):
    """Why ticket commands do not run: the mail is not filed on a ticket."""
    ticket = ctx.ticket
    if ticket is not None:
        return (f"nothing was done: this mail was not filed on ticket {ticket.number} ({ctx.plan.reason}); "
                f"send commands to {ctx.services.settings.public_address}")
    if ctx.plan.ticket_number:
        return f"nothing was done: there is no ticket {ctx.plan.ticket_number}"
    return "nothing was done: this mail refers to no ticket (keep the ticket tag in the subject)"


def _execute(commands, target, act):
    current = None
    try:
        with savepoint():  # a refusal undoes the commands before it
            for current in commands.lines:
                current.outcome, current.done = current.command.handler(target, current.args, act), True
    except Refused as exc:
        current.outcome = f"refused: {exc}"
        for line in commands.lines:
            if line.done:
                line.done, line.outcome = False, f"undone ({line.outcome}): a later command was refused"
            elif line is not current and not line.outcome:
                line.outcome = "not run: an earlier command was refused"
        commands.refusal = "nothing was done: a command was refused"


def outcome(commands, line):
    """What became of `line`: its outcome once run or refused, else what is to happen."""
    return line.outcome or (NOT_RUN if commands.refusal else TO_RUN)


def summary(commands):
    """What the mail did, one line per command (the reply mail's and the note's text)."""
    lines = [commands.refusal] if commands.refusal else []
    lines += [f"{line.text}\n  {outcome(commands, line)}" for line in commands.lines]
    return "\n".join(lines)
