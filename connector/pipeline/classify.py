"""Step 2: duplicates and automatic mail.

A message is its Message-ID and its bytes: every spool entry with both the
same is a copy of one message, delivered to the union of their envelope
recipients. An MTA makes copies when it delivers one recipient at a time
(a pipe with a recipient limit, LMTP in separate transactions) or retries
after a lost 250. The first copy processed is filed; a later copy is a
duplicate (logged, not filed again) unless it changes the one decision the
envelope makes: a message decided on the notifications address alone (to
triage, or ignored as automatic mail there), whose later copy went to the
public address too, is filed now by the rules for the union, and the
earlier triage item, if any, is closed (`supersedes`). The same Message-ID with other bytes is a different message;
mail without a Message-ID is keyed by its bytes alone.

Automatic mail (bounces, auto-replies, lists) is never answered; a bounce
never creates a ticket by itself. A mail whose triage item was deleted as spam
(`connector.store.tombstones`) is a duplicate when it comes again.
"""

from connector.mail.automatic import LOOP, Automatic, classify
from connector.pipeline.context import DUPLICATE, R_BOUNCE, TRIAGE
from connector.pipeline.route import addressed_to_notifications_only, notifications_only
from connector.store import tombstones
from connector.store.models import TRIAGE_AWAITING_REVIEW
from connector.store.queries import filed_copies


def run(ctx):
    parsed = ctx.parsed
    deleted = tombstones.matching(parsed.message_id, parsed.from_addr, ctx.spool.sha256)
    if deleted is not None:  # spam or phishing deleted from triage: never triaged again
        ctx.finish(DUPLICATE, f"the same mail as deleted: {tombstones.describe(deleted)}", distribute=False)
        return
    copies = filed_copies(parsed.message_id, ctx.spool.sha256, ctx.spool.id)
    if copies:
        envelopes = [ctx.spool.rcpt_to or []] + [c.rcpt_to for c in copies]
        ctx.envelope = list(dict.fromkeys(a for rcpts in envelopes for a in rcpts))
        # a copy decided on the notifications address alone (triage, or an automatic mail there
        # ignored) is superseded by a copy to the public address; any other decision stands
        filed = [c for c in copies if not notifications_only(ctx.services, c.rcpt_to)]
        if filed or addressed_to_notifications_only(ctx):
            same = "same Message-ID and bytes" if parsed.message_id else "no Message-ID, same bytes"
            ctx.finish(DUPLICATE, f"{same} as spool entry {(filed or copies)[0].spool_id}", distribute=False)
            return
        ctx.supersedes = [c.spool_id for c in copies]
        ctx.notes.append(f"also delivered to {', '.join(ctx.envelope)}: supersedes the notifications "
                         f"triage of spool entry {', '.join(str(i) for i in ctx.supersedes)}")
    ctx.automatic = classify(parsed, ctx.spool.mail_from, own_loop_value=ctx.services.loop_value)
    if not ctx.automatic.is_automatic and ctx.services.is_own(parsed.from_addr) \
            and ctx.services.settings.staff_by_email(parsed.from_addr) is None:
        # Mail "from" our own address that no employee sends from: a loop.
        ctx.automatic = Automatic(True, False, LOOP)
    if ctx.automatic.is_bounce and not ctx.hints.get("triage"):  # staff decided what it is (route)
        ctx.finish(TRIAGE, R_BOUNCE, triage_status=TRIAGE_AWAITING_REVIEW, distribute=False)
