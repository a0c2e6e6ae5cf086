"""`inbound list|show|replay|create-ticket|attach|close|status|delete`: the triage list
(seed 000) and what staff do with its items.

The actions are `connector.workqueue.triage`'s, the same a staff member's mail
command runs: each in one transaction, one log line, and a refusal
(`Refused`) is one line on stderr, exit 1, nothing changed.
"""

import sys

import peewee

from connector.commands.common import ALL, emit, open_store_of, settings_or_exit
from connector.log import iso
from connector.pipeline.context import FILED
from connector.store import events, views, wakeup
from connector.store.filing import processing as processing_of
from connector.store.models import SPOOL_SHUNTED, TRIAGE_STATUSES
from connector.store.queries import write_transaction
from connector.workqueue import triage
from connector.workqueue.errors import Refused


def inbound_json(item):
    return {"id": item.id, "status": item.status, "reason": item.reason, "from": item.from_addr,
            "subject": item.subject, "ticket": item.ticket_number, "received_at": iso(item.received_at),
            "spool_id": item.spool_id, "detail": item.detail, "filed_by": getattr(item, "filed_by", None)}


def cmd_inbound_list(args):
    open_store_of(args)
    status = None if args.status == ALL else args.status
    emit(args, [inbound_json(i) for i in views.triage_items(status)],
         ["id", "status", "reason", "from", "ticket", "received_at", "subject"])
    return 0


def _item(args):
    """Item `args.id` from the store, or None when there is none (said on stderr)."""
    open_store_of(args)
    item = views.triage_item(args.id)
    if item is None:
        print(f"connector: no inbound item {args.id}", file=sys.stderr)
    return item


def cmd_inbound_show(args):
    """One item, as `inbound list` shows it (the id a New Inbound Message Notice names)."""
    item = _item(args)
    if item is None:
        return 1
    emit(args, inbound_json(item))
    return 0


def cmd_inbound_replay(args):
    item = _item(args)
    if item is None:
        return 1
    from connector.pipeline.runner import requeue
    processing = processing_of(item.spool_id)
    if processing is None:
        print(f"connector: inbound item {args.id} is still waiting to be processed", file=sys.stderr)
        return 1
    if processing.action in FILED:
        # filed already (by the pipeline, or by `create-ticket` / `attach`): deciding it again
        # would file it a second time and answer the customer twice
        print(f"connector: inbound item {args.id}: its mail is filed already ({processing.action}, "
              f"{processing.reason}); nothing to process again", file=sys.stderr)
        return 1
    if processing.state != SPOOL_SHUNTED and not args.force:
        print(f"connector: inbound item {args.id} was processed ({processing.action}); "
              "use --force to process it again", file=sys.stderr)
        return 1
    if views.spool_raw_kept(item.spool_id) is False:
        print(f"connector: inbound item {args.id}: its original bytes were pruned ([retention] raw_days); "
              "nothing to process again", file=sys.stderr)
        return 1
    requeue(item.spool_id)
    print(f"spool entry {item.spool_id} queued again; the running daemon processes it")
    return 0


def _act(args, action, needs_staff=True, show=None):
    """Run `action(by, services)` on item `args.id` in one transaction, then print what it
    returns (`show`, or as JSON / a table); a refusal is one line, exit 1."""
    settings = settings_or_exit(args)
    by = None
    if args.as_email or needs_staff:
        member = settings.staff_by_email(args.as_email or "")
        if member is None:
            print(f"connector: --as {args.as_email or '(missing)'} is not an active employee "
                  "(hint: one of the emails in config/staff.yaml)", file=sys.stderr)
            return 1
        by = member.email
    from connector.app import open_services
    services = open_services(settings)
    try:
        with write_transaction():
            result = action(by, services)
    except Refused as refusal:
        print(f"connector: {refusal}", file=sys.stderr)
        return 1
    except peewee.OperationalError as exc:  # busy beyond the timeout: nothing changed
        print(f"connector: the store is busy, try again: {exc}", file=sys.stderr)
        return 75
    wakeup.notify(wakeup.DELIVER)  # an auto-response or copies may be waiting
    if show and not args.json:
        show(result)
    else:
        emit(args, result)
    return 0


def cmd_create_ticket(args):
    def action(by, services):
        number = triage.create_ticket(args.id, by=by, via=events.VIA_CLI, now=services.clock(),
                                      quiet=args.quiet, services=services)
        return {"item": args.id, "ticket": number}
    return _act(args, action, show=lambda result: print(result["ticket"]))


def cmd_attach(args):
    def action(by, services):
        triage.attach(args.id, args.ticket, by=by, via=events.VIA_CLI, now=services.clock(), internal=args.internal,
                      add_recipient=args.add_recipient, quiet=args.quiet, services=services)
        return {"item": args.id, "ticket": args.ticket, "public": not args.internal,
                "added_recipient": args.add_recipient}
    return _act(args, action)


def cmd_close(args):
    def action(by, services):
        triage.close(args.id, by=by, via=events.VIA_CLI, now=services.clock())
        return inbound_json(views.triage_item(args.id))
    return _act(args, action, needs_staff=False)


def cmd_status(args):
    def action(by, services):
        triage.set_status(args.id, args.status, by=by, via=events.VIA_CLI, now=services.clock())
        return inbound_json(views.triage_item(args.id))
    return _act(args, action, needs_staff=False)


def cmd_delete(args):
    def action(by, services):
        item = triage.item_or_refuse(args.id)
        triage.delete(args.id, by=by, via=events.VIA_CLI, now=services.clock())
        return {"deleted": item.id, "spool_id": item.spool_id, "from": item.from_addr, "subject": item.subject,
                "by": by}
    return _act(args, action)


def register(subparsers):
    parser = subparsers.add_parser("inbound", help="inbound messages that could not be routed (triage)")
    inbound = parser.add_subparsers(dest="inbound_command", metavar="ACTION")
    inbound.required = True

    def add(name, handler, help_text, staff):
        p = inbound.add_parser(name, help=help_text)
        p.add_argument("id", type=int, help="the inbound item's id (inbound list)")
        p.add_argument("--json", action="store_true", help="print JSON")
        # never argparse's `required`: a missing --as is refused like a wrong one (one line, exit 1)
        p.add_argument("--as", dest="as_email", metavar="EMAIL",
                       help="the active employee acting (config/staff.yaml)" + ("" if staff else "; optional: noted in the item's detail"))
        p.set_defaults(handler=handler)
        return p

    p = inbound.add_parser("list", help="triage items")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--status", choices=(*TRIAGE_STATUSES, ALL),
                   help=f"one status, or {ALL} (the default, as `inbox list --status all`)")
    p.set_defaults(handler=cmd_inbound_list)
    p = inbound.add_parser("show", help="one triage item (the id a New Inbound Message Notice names)")
    p.add_argument("id", type=int, help="the inbound item's id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_inbound_show)
    p = inbound.add_parser("replay", help="process an item's message again (shunted ones)")
    p.add_argument("id", type=int)
    p.add_argument("--force", action="store_true", help="also for a message that was processed")
    p.set_defaults(handler=cmd_inbound_replay)
    p = add("create-ticket", cmd_create_ticket, "make a ticket of an item (prints its number)", staff=True)
    p.add_argument("--quiet", action="store_true", help="send the customer no auto-response")
    p = add("attach", cmd_attach, "file an item into an existing ticket as a follow-up from its sender",
            staff=True)
    p.add_argument("ticket", type=int, help="the ticket's number")
    p.add_argument("--internal", action="store_true", help="file it Not Public (employees only)")
    p.add_argument("--add-recipient", action="store_true",
                   help="make the sender an external recipient (Cc), so their next mail files by itself")
    p.add_argument("--quiet", action="store_true", help="mail no copy of it")
    add("close", cmd_close, "mark an item closed (handled elsewhere)", staff=False)
    p = add("status", cmd_status, "set an item's status", staff=False)
    p.add_argument("status", metavar="STATUS", help=f"one of: {', '.join(TRIAGE_STATUSES)}")
    add("delete", cmd_delete, "delete spam or phishing: the item and its mail's bytes (a tombstone stays)",
        staff=True)
