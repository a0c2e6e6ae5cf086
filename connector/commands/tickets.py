"""Read the store: `tickets list|show|history|set|note|reply`, `message export` (`inbound`: commands/inbound.py)."""

import json
import sys
import time

from connector.commands.common import emit, open_store_of, parse_since, positive_int, settings_or_exit, with_json
from connector.health.state import daemon_running
from connector.log import get_logger, iso
from connector.store import events, tombstones, views
from connector.store.filing import ticket_by_number, update_ticket
from connector.store.queries import ticket_page, write_transaction

log = get_logger("tickets")


def _open(args):
    open_store_of(args)


def ticket_summary(ticket, message_count=None, contact=None):
    """A ticket as the commands show it; `list` passes the count and contact it fetched in its one query."""
    if message_count is None:
        message_count = views.message_count(ticket.id)
    if contact is None and ticket.contact_id:
        contact = ticket.contact.email
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "in_inbox": ticket.in_inbox,
        "contact": contact,
        "manager": ticket.manager,
        "account": ticket.account,
        "priority": ticket.priority,
        "message_count": message_count,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
    }


def message_json(message):
    return {
        "id": message.id, "direction": message.direction, "from": message.from_addr,
        "from_name": message.from_name, "to": message.to, "cc": message.cc, "subject": message.subject,
        "public": message.public, "internal": message.internal, "text": message.text,
        "reply_text": message.reply_text, "rules_version": message.rules_version,
        "message_id": message.message_id, "received_at": iso(message.received_at),
        "attachments": message.attachments,
    }


def cmd_tickets_list(args):
    """One query per page: the message count and the contact come in the same SELECT."""
    _open(args)
    since = None
    if args.since:
        since = parse_since(args.since)
        if since is None:
            print(f"connector: --since {args.since!r} is not a date (hint: 2026-12-01 or 2026-12-01T08:00+01:00)",
                  file=sys.stderr)
            return 1
    rows = ticket_page(in_inbox=args.inbox or None, status=args.status, since=since,
                       after=args.after, limit=args.limit)
    emit(args, [ticket_summary(t, message_count=count, contact=contact) for t, count, contact in rows],
         ["number", "status", "in_inbox", "contact", "manager", "message_count", "subject"])
    return 0


def cmd_tickets_show(args):
    _open(args)
    ticket = ticket_by_number(args.number)
    if ticket is None:
        print(f"connector: no ticket {args.number}", file=sys.stderr)
        return 1
    data = ticket_summary(ticket)
    external, employees = views.ticket_recipients(ticket.id)
    data["recipients"] = {"external": external, "employees": employees}
    data["messages"] = [message_json(m) for m in views.ticket_messages(ticket.id)]
    if args.json:
        emit(args, data)
        return 0
    emit(args, {k: v for k, v in data.items() if k not in ("messages", "recipients")})
    print("\nrecipients:", ", ".join(f"{r['address']} ({r['kind']})" for r in data["recipients"]["external"]),
          "| employees:", ", ".join(data["recipients"]["employees"]) or "-")
    for m in data["messages"]:
        flag = "public" if m["public"] else "NOT PUBLIC"
        print(f"\n#{m['id']} {m['direction']} {m['received_at']} from {m['from']} [{flag}]\n  {m['subject']}")
        print("  " + (m["reply_text"] or "").replace("\n", "\n  "))
    return 0


def cmd_tickets_set(args):
    """Seed 004's manual actions: change status or manager, move into / remove from the inbox.

    Read, compared and written in one transaction holding the write lock, and only the
    columns that change are written: a mail filed meanwhile is never overwritten."""
    settings = settings_or_exit(args)  # needs the staff list
    open_store_of(args, settings)
    if args.status is not None and not args.status.strip():
        print("connector: --status must not be empty: give the status to set, e.g. --status Closed", file=sys.stderr)
        return 1
    manager = None
    if args.manager:
        member = settings.staff_by_email(args.manager)
        if member is None:
            print(f"connector: {args.manager} is not an active employee", file=sys.stderr)
            return 1
        manager = member.email
    now = time.time()
    with write_transaction():
        ticket = ticket_by_number(args.number)
        if ticket is None:
            print(f"connector: no ticket {args.number}", file=sys.stderr)
            return 1
        columns, changes = {}, []  # (event, detail): one ticket event each
        if args.manager is not None and manager != ticket.manager:
            columns["manager"] = manager
            changes.append((events.MANAGER_CHANGED, {"from": ticket.manager, "to": manager}))
        if args.status and args.status != ticket.status:
            columns["status"] = args.status
            changes.append((events.STATUS_CHANGED, {"from": ticket.status, "to": args.status}))
        # seed 004: a ticket given another status leaves the Inbox, unless --inbox yes says otherwise
        in_inbox = (args.inbox == "yes") if args.inbox is not None else ticket.in_inbox and "status" not in columns
        if ticket.in_inbox != in_inbox:
            columns["in_inbox"] = in_inbox
            changes.append((events.INBOX_FLAG_CHANGED, {"in_inbox": columns["in_inbox"]}))
        if columns:
            update_ticket(ticket.id, updated_at=now, **columns)
        for name, detail in changes:
            events.record(ticket.id, name, at=now, by=None, via=events.VIA_CLI, detail=detail)
            log.info("ticket.changed", ticket=ticket.number, change=name, **detail)
    emit(args, ticket_summary(ticket_by_number(args.number)))
    return 0


def cmd_tickets_write(args):
    """`tickets note|reply N --as EMAIL`: the text on stdin, spooled as the employee's mail
    (`connector.pipeline.cli_mail`); the daemon files and distributes it."""
    settings = settings_or_exit(args)
    from connector.app import open_services
    from connector.pipeline import cli_mail
    from connector.store.spool import store_message
    services = open_services(settings)
    ticket = ticket_by_number(args.number)
    if ticket is None:
        print(f"connector: no ticket {args.number}", file=sys.stderr)
        return 1
    staff = settings.staff_by_email(args.as_email)
    if staff is None:
        print(f"connector: --as {args.as_email} is not an active employee (hint: see config/staff.yaml)",
              file=sys.stderr)
        return 1
    text = sys.stdin.read()
    if not text.strip():
        print(f"connector: no text on stdin: nothing to file (hint: echo 'text' | connector tickets "
              f"{args.kind} {args.number} --as {args.as_email})", file=sys.stderr)
        return 1
    references = [m.message_id for m in views.ticket_messages(ticket.id) if m.message_id]
    raw, message_id = cli_mail.build(services, ticket, staff, args.as_email.lower(), text, references)
    spool_id = store_message(raw, mail_from=args.as_email, rcpt_to=[settings.public_address],
                             intake=cli_mail.CLI_INTAKE,
                             hints={cli_mail.CLI_HINT: {"kind": args.kind, "ticket": ticket.number,
                                                        "by": args.as_email.lower()}})
    log.info("tickets.written", kind=args.kind, ticket=ticket.number, by=args.as_email, spool_id=spool_id,
             message_id=message_id)
    if args.json:
        emit(args, {"kind": args.kind, "ticket": ticket.number, "by": args.as_email.lower(), "spool_id": spool_id,
                    "message_id": message_id})
    else:
        print(f"{args.kind} on ticket {ticket.number} queued as spool entry {spool_id} ({message_id}); "
              + ("the running daemon files and distributes it" if daemon_running(settings.data_dir) else
                 "no daemon runs now: it is filed and distributed when the daemon starts"))
    return 0


def event_json(event):
    return {"at": iso(event.at), "event": event.event, "by": event.by, "via": event.via, "detail": event.detail}


def cmd_tickets_history(args):
    """Every event of a ticket, oldest first."""
    _open(args)
    ticket = ticket_by_number(args.number)
    if ticket is None:
        print(f"connector: no ticket {args.number}", file=sys.stderr)
        return 1
    rows = [event_json(e) for e in events.history(ticket.id)]
    if args.json:
        emit(args, rows)
    else:
        for row in rows:
            print(f"{row['at']}  {row['event']:<18} {row['via']:<7} {row['by'] or '-'}  "
                  f"{json.dumps(row['detail'], ensure_ascii=False) if row['detail'] else ''}".rstrip())
    return 0


def cmd_message_export(args):
    _open(args)
    raw, sha256 = views.original_bytes("spool" if args.spool else "outbox" if args.outbox else "message", args.id)
    if raw is None:
        print(f"connector: no message {args.id}", file=sys.stderr)
        return 1
    deleted = tombstones.matching(None, None, sha256) if args.spool and not raw else None
    if deleted is not None:
        print(f"connector: spool entry {args.id} was deleted as spam or phishing: {tombstones.describe(deleted)} "
              f"(From {deleted.from_addr or '-'}, Message-ID {deleted.message_id or '-'}, "
              f"sha256 {deleted.sha256})", file=sys.stderr)
        return 1
    if not raw:
        print(f"connector: the original bytes of message {args.id} were pruned ([retention] raw_days); "
              "the ticket keeps its text", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()
    return 0


def _sub(subparsers, name, help_text):
    parser = subparsers.add_parser(name, help=help_text)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    inner.required = True
    return inner


def register(subparsers):
    tickets = _sub(subparsers, "tickets", "list and show tickets")
    p = with_json(tickets.add_parser("list", help="all tickets"))
    p.add_argument("--inbox", action="store_true", help="only tickets in the inbox")
    p.add_argument("--status", help="only tickets with this status (e.g. New)")
    p.add_argument("--since", help="only tickets updated at or after this date/time (ISO 8601; without an offset such as +01:00 it is UTC, not local time)")
    p.add_argument("--after", type=int, default=0, metavar="NUMBER",
                   help="start after this ticket number (the next page: the last number shown)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many tickets")
    p.set_defaults(handler=cmd_tickets_list)
    p = with_json(tickets.add_parser("show", help="one ticket with recipients and messages"))
    p.add_argument("number", type=int)
    p.set_defaults(handler=cmd_tickets_show)

    p = with_json(tickets.add_parser("history", help="every event of a ticket, oldest first"))
    p.add_argument("number", type=int)
    p.set_defaults(handler=cmd_tickets_history)
    p = with_json(tickets.add_parser("set", help="change status, manager or inbox flag"))
    p.add_argument("number", type=int)
    p.add_argument("--status")
    p.add_argument("--manager", help="a staff email; empty to clear")
    p.add_argument("--inbox", choices=("yes", "no"))
    p.set_defaults(handler=cmd_tickets_set)

    for kind, text in (("note", "an internal note (stdin), filed Not Public, to the employee recipients"),
                       ("reply", "a public reply (stdin), mailed to the external recipients like an "
                                 "employee's mail")):
        p = with_json(tickets.add_parser(kind, help=text))
        p.add_argument("number", type=int)
        p.add_argument("--as", dest="as_email", required=True, metavar="EMAIL", help="an active employee's email")
        p.set_defaults(handler=cmd_tickets_write, kind=kind)

    message = _sub(subparsers, "message", "messages")
    p = message.add_parser("export", help="write a message's original bytes to stdout")
    p.add_argument("id", type=int, help="message id (tickets show), or spool/outbox id with the flags")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--spool", action="store_true", help="ID is a spool entry id")
    group.add_argument("--outbox", action="store_true", help="ID is an outbox id")
    p.set_defaults(handler=cmd_message_export)
