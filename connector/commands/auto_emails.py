"""`connector auto-emails preview EVENT --ticket N [--by EMAIL] [--json]`: who would get
which automatic mail for that event on that ticket now (a blocked one `suppressed`, as the
outbox would hold it), and who would not and why (`connector.workqueue.auto_emails.decide`,
`connector.pipeline.blocking.apply_blocks`: what the planner does). Reads only."""

import sys
import time

from connector.commands.common import emit, open_store_of, settings_or_exit
from connector.settings.auto_emails import EVENTS
from connector.store.events import VIA_CLI
from connector.pipeline import blocking
from connector.store.models import OUTBOX_PENDING, OUTBOX_SUPPRESSED, Ticket, TicketEvent
from connector.workqueue import auto_emails

EX_USAGE = 64


def cmd_preview(args):
    settings = settings_or_exit(args)
    if args.event not in EVENTS:
        print(f"connector: {args.event!r} is not a ticket event (use one of: {', '.join(EVENTS)})", file=sys.stderr)
        return EX_USAGE
    open_store_of(args, settings)
    ticket = Ticket.get_or_none(Ticket.number == args.ticket)
    if ticket is None:
        print(f"connector: no ticket {args.ticket}", file=sys.stderr)
        return 1
    by = args.by.strip().lower() if args.by else None
    view = auto_emails.TicketView(ticket, settings)
    decision = auto_emails.decide(view, args.event, by, settings)
    event = TicketEvent(ticket=ticket.id, at=time.time(), event=args.event, by=by, via=VIA_CLI, detail={})
    planned, _, _ = blocking.apply_blocks(auto_emails.Planner(settings).outgoing(view, event, decision), ticket.id,
                                          ticket.number, event.at)
    named = {mail.address: mail for mail in decision.mails}
    mails = [{"to": out.rcpt[0], "rule": named[out.rcpt[0]].rule, "kind": named[out.rcpt[0]].kind,
              "template": out.template, "from": out.from_address, "subject": out.subject,
              "status": OUTBOX_SUPPRESSED if out.suppressed else OUTBOX_PENDING, "blocked": out.blocked or None}
             for out in planned]
    skipped = [{"to": s.address or None, "rule": s.rule, "kind": s.kind, "reason": s.reason}
               for s in decision.skipped]
    if args.json:
        emit(args, {"event": args.event, "ticket": ticket.number, "by": by, "mails": mails, "skipped": skipped})
        return 0
    print(f"ticket {ticket.number}, event {args.event}" + (f", caused by {by}" if by else ""))
    print("would send:")
    emit(args, mails, ["to", "rule", "kind", "template", "status", "subject"])
    print("would not send:")
    emit(args, skipped, ["to", "rule", "kind", "reason"])
    return 0


def register(subparsers):
    parser = subparsers.add_parser("auto-emails", help="automatic e-mails on ticket events (config/auto_emails.yaml)")
    inner = parser.add_subparsers(dest="auto_emails_command", metavar="ACTION")
    inner.required = True
    p = inner.add_parser("preview", help="who would get which mail for EVENT on a ticket now (changes nothing)")
    p.add_argument("event", help=f"one of: {', '.join(EVENTS)}")
    p.add_argument("--ticket", type=int, required=True, metavar="N")
    p.add_argument("--by", metavar="EMAIL", help="the person causing the event (never mailed about it)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_preview)
