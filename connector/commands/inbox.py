"""`connector inbox list|show|add|take|complete|cancel|forward` (seed 001): the work queues by CLI.

The actions are `connector.workqueue.inbox`'s, run in one transaction each with
`via` cli; `--as` must be an active employee's email. A refusal prints one line
(what and why) and exits 1, and nothing changes.
"""

import sys
import time

import peewee

from connector.commands.common import ALL, emit, limit_or_zero, open_store_of, settings_or_exit
from connector.log import iso
from connector.commands.tickets import event_json
from connector.settings import inboxes
from connector.store import events, views
from connector.store.models import ENTRY_OPEN, ENTRY_STATUSES, InboxEntry
from connector.store.queries import write_transaction
from connector.workqueue import inbox as actions
from connector.workqueue.errors import Refused

# Entries `inbox list` shows unless told otherwise (`--limit N`; `--limit 0` or `--all`: every one).
LIST_LIMIT = 100
COLUMNS = ["id", "ticket", "inbox", "status", "owner", "due_type", "due_at", "subject"]
ENTRY_EVENTS = (events.INBOX_ADDED, events.TICKET_TAKEN, events.TICKET_COMPLETED, events.TICKET_CANCELLED,
                events.TICKET_FORWARDED)


def entry_json(entry, number, subject):
    return {"id": entry.id, "ticket": number, "subject": subject, "inbox": entry.inbox, "owner": entry.owner,
            "status": entry.status, "due_type": entry.due_type, "due_at": iso(entry.due_at),
            "message": entry.message, "created_at": iso(entry.created_at), "created_by": entry.created_by,
            "forwarded_from": entry.forwarded_from}


def _refuse(text):
    print(f"connector: {text}", file=sys.stderr)
    return 1


def _entries(where=None, order=None, limit=None):
    """Entries with their ticket's number and subject, in one query."""
    return [entry_json(e, e.number, e.subject) for e in views.inbox_entries(where, order, limit)]


def cmd_inbox_list(args):
    """One query per page: the ticket's number and subject come in the same SELECT. At most
    LIST_LIMIT entries unless `--limit N` (0: no limit) or `--all`, in id order as before; when
    more match, one line on stderr says so and names the next page (`--after`, as `tickets list`)."""
    settings = settings_or_exit(args)
    open_store_of(args, settings)
    config = inboxes.of(settings)
    where = InboxEntry.id > (args.after or 0)
    if args.inbox:
        found = config.get(args.inbox)
        if found is None:
            return _refuse(f"unknown inbox {args.inbox!r}: the inboxes are {config.names} (config/inboxes.yaml)")
        where &= InboxEntry.inbox == found.name
    status = (args.status or ENTRY_OPEN).lower()
    if status not in ENTRY_STATUSES + (ALL,):
        return _refuse(f"unknown status {args.status!r}: use one of {', '.join(ENTRY_STATUSES + (ALL,))}")
    if status != ALL:
        where &= InboxEntry.status == status
    if args.owner:
        member = settings.staff_by_email(args.owner)
        where &= InboxEntry.owner == (member.email if member else args.owner.strip().lower())
    if args.unowned:
        where &= InboxEntry.owner.is_null()
    if args.overdue:
        where &= InboxEntry.due_at.is_null(False) & (InboxEntry.due_at < time.time())
    limit = None if args.all or args.limit == 0 else (args.limit or LIST_LIMIT)
    rows = _entries(where, limit=None if limit is None else limit + 1)   # one more: are there more?
    emit(args, rows[:limit], COLUMNS)
    if limit is not None and len(rows) > limit:   # stderr: --json stays the list alone
        print(f"connector: the first {limit} entries; more follow (the next page: --after {rows[limit - 1]['id']}; "
              "all of them: --all)", file=sys.stderr)
    return 0


def cmd_inbox_show(args):
    """The entry, its ticket's latest inbound reply text, and the history of its chain."""
    open_store_of(args)
    rows = _entries(InboxEntry.id == args.id)
    if not rows:
        return _refuse(f"no inbox entry {args.id}")
    data = rows[0]
    entry = views.inbox_entries(InboxEntry.id == args.id)[0]
    data["reply_text"] = views.latest_inbound_reply(entry.ticket_id)
    data["history"] = [event_json(e) for e in _chain_history(entry)]
    if args.json:
        emit(args, data)
        return 0
    emit(args, {k: v for k, v in data.items() if k not in ("history", "reply_text")})
    print("\nlatest message:\n  " + (data["reply_text"] or "(none)").replace("\n", "\n  "))
    print("\nhistory:")
    for row in data["history"]:
        where = row["detail"].get("inbox", "") + (f" -> {row['detail']['to']}" if "to" in row["detail"] else "")
        print(f"  {row['at']}  {row['event']:<18} {row['via']:<7} {row['by'] or '-'}  {where}".rstrip())
    return 0


def _chain_history(entry):
    """The inbox events of this entry's chain: the entries it was forwarded from, and to."""
    links = views.inbox_links(entry.ticket_id)
    chain, grew = {entry.id}, True
    while grew:
        more = {i for i, source in links.items() if source in chain} | {links[i] for i in chain if links.get(i)}
        grew = not more <= chain
        chain |= more
    return [e for e in events.history(entry.ticket_id) if e.event in ENTRY_EVENTS and e.detail.get("entry") in chain]


def _act(args, action):
    """Run `action(settings, by, now)` in one transaction; print the entry it leaves."""
    settings = settings_or_exit(args)
    open_store_of(args, settings)
    if not args.as_email:
        return _refuse("--as EMAIL is required: the active employee doing this")
    member = settings.staff_by_email(args.as_email)
    if member is None:
        return _refuse(f"--as {args.as_email} is not an active employee's email (config/staff.yaml)")
    now = time.time()
    try:
        with write_transaction():
            entry_id = action(settings, member.email, now)
    except Refused as exc:
        return _refuse(str(exc))
    except peewee.OperationalError as exc:
        print(f"connector: the store is busy, try again: {exc}", file=sys.stderr)
        return 75
    emit(args, _entries(InboxEntry.id == entry_id)[0], COLUMNS)
    return 0


def cmd_inbox_add(args):
    def run(settings, by, now):
        if not args.inbox:
            raise Refused("--inbox NAME is required: the inbox to put the ticket in")
        return actions.add(args.ticket, args.inbox, by=by, via=events.VIA_CLI, now=now, due_type=args.due_type,
                           due_at=args.due, message=args.message, settings=settings)
    return _act(args, run)


def _entry_action(function, **options):
    """The handler of `inbox take|complete|cancel ID`: `function(ID, ...)` with these
    options (keyword: args attribute)."""
    def handler(args):
        def run(settings, by, now):
            function(args.id, by=by, via=events.VIA_CLI, now=now, settings=settings,
                     **{name: getattr(args, attr) for name, attr in options.items()})
            return args.id
        return _act(args, run)
    return handler


cmd_inbox_take = _entry_action(actions.take, force="force")
cmd_inbox_complete = _entry_action(actions.complete)
cmd_inbox_cancel = _entry_action(actions.cancel, message="message")


def cmd_inbox_forward(args):
    def run(settings, by, now):
        if not args.to:
            raise Refused("--to INBOX is required: the inbox to forward to")
        return actions.forward(args.id, to=args.to, due_type=args.due_type, due_at=args.due, by=by,
                               via=events.VIA_CLI, now=now, message=args.message, settings=settings)
    return _act(args, run)


def register(subparsers):
    group = subparsers.add_parser("inbox", help="work queues: list, show, add, take, complete, cancel, forward")
    sub = group.add_subparsers(dest="inbox_command", required=True)

    def command(name, help, handler):
        p = sub.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)
        return p

    def acting(p):
        # Not argparse-required: a missing --as is a refusal like a wrong one (one line, exit 1).
        p.add_argument("--as", dest="as_email", metavar="EMAIL", help="the employee acting (required)")
        return p

    p = command("list", "inbox entries (default: open ones)", cmd_inbox_list)
    p.add_argument("inbox", nargs="?", help="only this inbox")
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--owner", metavar="EMAIL", help="only entries this employee owns")
    owner.add_argument("--unowned", action="store_true", help="only entries nobody owns")
    p.add_argument("--overdue", action="store_true", help="only entries whose due date has passed")
    p.add_argument("--status", help=f"{', '.join(ENTRY_STATUSES)} or {ALL} (default: {ENTRY_OPEN})")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="start after this entry id (the next page)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--limit", type=limit_or_zero, default=None,
                      help=f"at most this many entries (default {LIST_LIMIT}; 0: all)")
    size.add_argument("--all", action="store_true", help="every entry, no limit")

    p = command("show", "an entry, its ticket's latest message and its history", cmd_inbox_show)
    p.add_argument("id", type=int)

    p = acting(command("add", "put a ticket in an inbox", cmd_inbox_add))
    p.add_argument("ticket", type=int)
    p.add_argument("--inbox", metavar="NAME", help="the inbox (required)")
    p.add_argument("--due-type", metavar="T")
    p.add_argument("--due", metavar="DATE", help="ISO 8601; a date alone is the end of that day (UTC)")
    p.add_argument("--message", metavar="M")

    p = acting(command("take", "own an entry", cmd_inbox_take))
    p.add_argument("id", type=int)
    p.add_argument("--force", action="store_true", help="take it even when not a member or owned by another")

    p = acting(command("complete", "mark an entry done", cmd_inbox_complete))
    p.add_argument("id", type=int)

    p = acting(command("cancel", "drop an entry", cmd_inbox_cancel))
    p.add_argument("id", type=int)
    p.add_argument("--message", metavar="M")

    p = acting(command("forward", "pass an entry on to another inbox", cmd_inbox_forward))
    p.add_argument("id", type=int)
    p.add_argument("--to", metavar="INBOX", help="the inbox to forward to (required)")
    p.add_argument("--due-type", metavar="T", help="one of due_types of config/inboxes.yaml (required)")
    p.add_argument("--due", metavar="DATE", help="ISO 8601; a date alone is the end of that day, UTC (required)")
    p.add_argument("--message", metavar="M")
