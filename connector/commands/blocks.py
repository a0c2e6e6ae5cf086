"""`blocks list|lift` and `why ADDRESS`: the blocks of automatic mail
(`connector.store.blocks`) and what became of the mail sent to one address."""

import sys
import time

from connector.commands.common import emit, open_store_of, positive_int, with_json
from connector.log import iso
from connector.log import get_logger
from connector.outbound.replies import ACCEPTED, DEFERRED, REFUSED
from connector.settings.addresses import ADDRESS_RE
from connector.store import blocks
from connector.store.models import (
    BLOCK_ADDRESS, OUTBOX_BOUNCED, OUTBOX_CANCELLED, OUTBOX_SUPPRESSED, database)

log = get_logger("blocks")

COLUMNS = ["target", "kind", "reason", "status", "created_at", "until", "source"]
WHY_COLUMNS = ["id", "ticket", "kind", "created_at", "what", "why", "subject"]
WHY_LIMIT = 20
# What happened to one recipient of one row (`why`), by its delivery state.
WHAT = {ACCEPTED: "sent", DEFERRED: "deferred", REFUSED: "failed"}


def block_json(block, now):
    return {"target": block.target, "kind": block.kind, "reason": block.reason,
            "status": blocks.status_of(block, now), "created_at": iso(block.created_at), "until": iso(block.until),
            "source": block.source}


def cmd_list(args):
    open_store_of(args)
    now = time.time()
    emit(args, [block_json(b, now) for b in blocks.listing(now, include_all=args.all)], COLUMNS)
    return 0


def cmd_lift(args):
    open_store_of(args)
    with database.atomic():
        lifted = blocks.lift(args.target, time.time())
    if not lifted:
        print(f"connector: {args.target} is not blocked", file=sys.stderr)
        return 1
    log.info("block.lifted", target=args.target, by="cli", count=lifted)
    print(f"lifted {lifted} block(s) of {args.target}")
    return 0


def what_happened(row, address):
    """(what, why) of `row` for `address`: sent, deferred, failed, bounced, suppressed, pending, cancelled."""
    if row.status in (OUTBOX_BOUNCED, OUTBOX_SUPPRESSED):
        return row.status, row.blocked
    state = (row.recipients or {}).get(next((a for a in row.rcpt if a.lower() == address), address), {})
    if row.status == OUTBOX_CANCELLED or not state:
        return row.status, row.blocked or row.last_error
    return WHAT.get(state["state"], state["state"]), row.blocked or state.get("reply")


def cmd_why(args):
    open_store_of(args)
    now, address = time.time(), args.address.strip().lower()
    if not ADDRESS_RE.match(address):
        print(f"connector: {args.address!r} is not an email address: give one, e.g. why jane@example.com",
              file=sys.stderr)
        return 1
    block = blocks.active(BLOCK_ADDRESS, address, now)
    mail = []
    for row in blocks.recent_mail(address, args.limit):
        what, why = what_happened(row, address)
        mail.append({"id": row.id, "ticket": row.ticket.number if row.ticket_id else None, "kind": row.kind,
                     "subject": row.subject, "created_at": iso(row.created_at), "what": what, "why": why})
    report = {"address": address, "block": block_json(block, now) if block else None, "mail": mail}
    if args.json:
        return emit(args, report) or 0
    print(f"{address}: " + (f"blocked until {iso(block.until)} ({block.reason}; {block.source})" if block
                            else "not blocked"))
    emit(args, mail, WHY_COLUMNS)
    return 0


def register(subparsers):
    parser = subparsers.add_parser("blocks", help="blocks of automatic mail to an address or a ticket")
    sub = parser.add_subparsers(dest="blocks_command", metavar="ACTION")
    sub.required = True
    p = with_json(sub.add_parser("list", help="the active blocks"))
    p.add_argument("--all", action="store_true", help="also the lifted and expired ones")
    p.set_defaults(handler=cmd_list)
    p = sub.add_parser("lift", help="lift the block of an address or a ticket (its number) now")
    p.add_argument("target")
    p.set_defaults(handler=cmd_lift)
    p = with_json(subparsers.add_parser("why", help="the recent outgoing mail to an address, what became of "
                                                "each, and any active block"))
    p.add_argument("address")
    p.add_argument("--limit", type=positive_int, default=WHY_LIMIT, help=f"at most this many mails (default {WHY_LIMIT})")
    p.set_defaults(handler=cmd_why)
