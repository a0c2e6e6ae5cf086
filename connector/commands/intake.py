"""`inject` (an MTA's pipe transport) and `replay` (process a file now, or show the decision).

`inject` speaks to an MTA through its exit code only: 0 once the message is
in the spool, 65 (EX_DATAERR) for what can never be accepted (not a mail, too
big, no recipient of ours), 75 (EX_TEMPFAIL) for everything else, argument
errors and unexpected exceptions included, so that the MTA keeps the mail and
retries instead of bouncing it to the customer.
"""

import argparse
import json
import re
import sys

from connector.commands.common import (
    EX_DATAERR, EX_OK, EX_TEMPFAIL, emit, settings_or_exit)
from connector.intake import header_message_id
from connector.log import get_logger

HEADER_START_RE = re.compile(rb"^(From |[!-9;-~]+[ \t]*:)")


def looks_like_mail(raw):
    """Input that can never be a message: empty, or not starting with a header."""
    return bool(raw.strip()) and bool(HEADER_START_RE.match(raw.lstrip(b"\r\n")))


def strip_mbox_from(raw):
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") else raw


def cmd_inject(args):
    try:
        return _inject(args)
    except Exception as exc:  # whatever it is, the MTA keeps the mail and retries
        print(f"connector: could not store the message, try again later: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        get_logger("intake").error("intake.store_failed", error=f"{type(exc).__name__}: {exc}", intake="pipe")
        return EX_TEMPFAIL


def _inject(args):
    settings = settings_or_exit(args, EX_TEMPFAIL)  # a broken config is fixed, then the MTA retries
    log = get_logger("intake")
    raw = sys.stdin.buffer.read(settings.max_message_size + 1)
    if len(raw) > settings.max_message_size:
        print(f"connector: message larger than max_message_size ({settings.max_message_size} bytes)",
              file=sys.stderr)
        log.warning("intake.rejected", reason="too_large", intake="pipe")
        return EX_DATAERR
    if not looks_like_mail(raw):
        print("connector: input is not an email message (empty or no header)", file=sys.stderr)
        log.warning("intake.rejected", reason="not_a_message", size=len(raw), intake="pipe")
        return EX_DATAERR
    from connector.mail.addresses import OwnAddresses
    own = OwnAddresses.of(settings)
    recipients = list(dict.fromkeys(args.recipient or ()))
    ours = [r for r in recipients if own.is_own(r)]
    for foreign in (r for r in recipients if r not in ours):
        print(f"connector: {foreign} is not an address of this connector", file=sys.stderr)
        log.warning("intake.rcpt_rejected", rcpt=foreign, intake="pipe")
    if recipients and not ours:
        return EX_DATAERR  # never acceptable: the MTA bounces it
    from connector.store.db import open_store
    from connector.store.spool import store_message
    try:
        open_store(settings.database, upgrade=settings.auto_upgrade)
        spool_id = store_message(strip_mbox_from(raw), mail_from=args.sender, rcpt_to=ours, intake="pipe")
    except Exception as exc:
        print(f"connector: could not store the message, try again later: {exc}", file=sys.stderr)
        log.error("intake.store_failed", error=f"{type(exc).__name__}: {exc}", intake="pipe")
        return EX_TEMPFAIL
    log.info("intake.accepted", spool_id=spool_id, message_id=header_message_id(raw), size=len(raw),
             intake="pipe", rcpt=ours)
    return EX_OK


class PipeArgumentParser(argparse.ArgumentParser):
    """`inject`'s own parser: an argument it does not understand is a transport set up
    wrong, to be fixed while the MTA keeps the mail, so it exits 75, never argparse's 2
    (which Postfix takes for a permanent failure and bounces to the customer)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"connector inject: {message} (exit 75: the MTA keeps the mail and retries)", file=sys.stderr)
        raise SystemExit(EX_TEMPFAIL)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace, extras


def cmd_replay(args):
    settings = settings_or_exit(args)
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.store.filing import processing
    from connector.store.spool import store_message, unsaved_entry
    try:
        with open(args.file, "rb") as handle:
            raw = strip_mbox_from(handle.read())
    except OSError as exc:
        print(f"connector: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    runner = Runner(open_services(settings))
    rcpt = [args.recipient] if args.recipient else []
    if args.dry_run:
        result = runner.dry_run(unsaved_entry(raw, mail_from=args.sender, rcpt_to=rcpt,
                                              intake="replay")).summary()
        result["dry_run"] = True
    else:
        spool_id = store_message(raw, mail_from=args.sender, rcpt_to=rcpt, intake="replay")
        ctx = runner.process(spool_id)
        entry = processing(spool_id)
        result = ctx.summary() if ctx else {"action": entry and entry.action, "ticket": None,
                                            "reason": entry and entry.reason}
        result.update(spool_id=spool_id, state=entry and entry.state, dry_run=False)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        emit(args, {k: result.get(k) for k in ("action", "ticket", "reason", "public", "recipients")})
    return 0


def register(subparsers):
    p = subparsers.add_parser("inject", help="store a message from stdin (an MTA's pipe transport)")
    p.__class__ = PipeArgumentParser  # add_parser takes no parser class of its own
    p.add_argument("--recipient", action="extend", nargs="+", metavar="ADDRESS",
                   help="envelope recipient, repeatable (Postfix: --recipient=${recipient}, one per recipient)")
    p.add_argument("--sender", help="envelope sender (Postfix: ${sender}); empty for a null path")
    p.set_defaults(handler=cmd_inject)
    p = subparsers.add_parser("replay", help="process FILE.eml now; --dry-run prints the decision only")
    p.add_argument("file", metavar="FILE.eml")
    p.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--recipient", help="envelope recipient to assume")
    p.add_argument("--sender", help="envelope sender to assume")
    p.set_defaults(handler=cmd_replay)
