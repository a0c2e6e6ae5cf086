"""`outbox list|retry|cancel`: outgoing mail, its delivery per recipient, and the operator's actions."""

import sys

from connector.commands.common import emit, open_store_of, positive_int, with_json
from connector.log import iso
from connector.outbound.control import OutboxStateError, cancel, retry
from connector.store.models import OUTBOX_STATUSES
from connector.store.queries import outbox_page

COLUMNS = ["id", "ticket", "kind", "status", "attempts", "to", "cc", "bcc", "subject", "last_error", "blocked"]


def outbox_json(o, ticket_number=None):
    states = o.recipients or {}
    if ticket_number is None and o.ticket_id:
        ticket_number = o.ticket.number
    return {"id": o.id, "ticket": ticket_number, "kind": o.kind, "to": o.to,
            "cc": o.cc, "bcc": o.bcc, "subject": o.subject, "status": o.status, "attempts": o.attempts,
            "last_error": o.last_error, "next_attempt_at": iso(o.next_attempt_at), "sent_at": iso(o.sent_at),
            "created_at": iso(o.created_at), "mail_from": o.mail_from, "rcpt": o.rcpt, "blocked": o.blocked,
            "claimed_by": o.claimed_by, "claimed_until": iso(o.claimed_until), "sent_by": o.sent_by,
            "recipients": [{"address": a, "state": states.get(a, {}).get("state", "pending"),
                            "reply": states.get(a, {}).get("reply")} for a in o.rcpt]}


def cmd_outbox_list(args):
    """One query per page, without the mail bodies."""
    open_store_of(args)
    emit(args, [outbox_json(o, number) for o, number in outbox_page(args.status, args.after, args.limit)], COLUMNS)
    return 0


def _act(action):
    def handler(args):
        open_store_of(args)
        try:
            entry = action(args.id)
        except OutboxStateError as exc:
            print(f"connector: {exc}", file=sys.stderr)
            return 1
        emit(args, outbox_json(entry), None if args.json else ["id", "status", "rcpt", "subject"])
        return 0
    return handler


def register(subparsers):
    parser = subparsers.add_parser("outbox", help="outgoing mail and its delivery")
    outbox = parser.add_subparsers(dest="outbox_command", metavar="ACTION")
    outbox.required = True
    p = with_json(outbox.add_parser("list", help="outbox rows"))
    p.add_argument("--status", choices=OUTBOX_STATUSES)
    p.add_argument("--after", type=int, default=0, metavar="ID", help="start after this row (the next page)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many rows")
    p.set_defaults(handler=cmd_outbox_list)
    p = with_json(outbox.add_parser("retry", help="deliver a deferred or failed row now, to the recipients not "
                                        "accepted yet (the give-up clock restarts)"))
    p.add_argument("id", type=int)
    p.set_defaults(handler=_act(retry))
    p = with_json(outbox.add_parser("cancel", help="never deliver a row (pending, deferred, or failed to acknowledge it)"))
    p.add_argument("id", type=int)
    p.set_defaults(handler=_act(cancel))
