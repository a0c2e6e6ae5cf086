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
never creates a ticket by itself (staff may file one: hint `triage`). A mail
whose triage item was deleted as spam (`connector.store.tombstones`) is a
duplicate when it comes again. Our own mail come back (our loop marker, our
Message-ID, our address as From that no employee sends from) is automatic.

Reads: the parsed message, the spool entry (envelope, sha256), earlier copies.
Sets: `ctx.automatic`, `ctx.envelope`; `plan.supersedes`; finishes the plan
for a duplicate (`duplicate`) and a bounce: attributed to the mail that
bounced (`connector.pipeline.attribute`, link `bounce_attributed`), else
triage `bounce`.
"""

from connector.mail.automatic import LOOP, Automatic, classify, own_mail
from connector.pipeline import attribute
from connector.pipeline.context import DUPLICATE, REASON_BOUNCE, TRIAGE
from connector.pipeline.route import addressed_to_notifications_only
from connector.store import tombstones
from connector.store.models import TRIAGE_AWAITING_REVIEW
from connector.store.queries import filed_copies

STEP = "classify"
PERSON = "person"   # the trace's result for mail a person wrote
# The links of this step: the first two decide (the plan's `link`), the last only classifies.
LINK_DUPLICATE, LINK_BOUNCE, LINK_AUTOMATIC = "duplicate", "bounce", "automatic"
LINK_DELETED = "deleted_before"   # the same mail as one deleted from triage (a tombstone)


def run(ctx):
    parsed, services = ctx.parsed, ctx.services
    deleted = tombstones.matching(parsed.message_id, parsed.from_addr, ctx.spool.sha256)
    if deleted is not None:  # spam or phishing deleted from triage: never triaged again
        ctx.finish(DUPLICATE, f"the same mail as deleted: {tombstones.describe(deleted)}", link=LINK_DELETED)
        ctx.record(STEP, LINK_DELETED, DUPLICATE)
        return
    copies = filed_copies(parsed.message_id, ctx.spool.sha256, ctx.spool.id)
    if copies:
        envelopes = [ctx.spool.rcpt_to or []] + [c.rcpt_to for c in copies]
        ctx.envelope = list(dict.fromkeys(a for rcpts in envelopes for a in rcpts))
        # a copy decided on the notifications address alone (triage, or an automatic mail there
        # ignored) is superseded by a copy to the public address; any other decision stands
        filed = [c for c in copies if not services.addresses.notifications_only(c.rcpt_to)]
        if filed or addressed_to_notifications_only(ctx):
            same = "same Message-ID and bytes" if parsed.message_id else "no Message-ID, same bytes"
            ctx.finish(DUPLICATE, f"{same} as spool entry {(filed or copies)[0].spool_id}", link=LINK_DUPLICATE)
            ctx.record(STEP, LINK_DUPLICATE, DUPLICATE)
            return
        ctx.plan.supersedes = [c.spool_id for c in copies]
        ctx.plan.notes.append(f"also delivered to {', '.join(ctx.envelope)}: supersedes the notifications "
                              f"triage of spool entry {', '.join(str(i) for i in ctx.plan.supersedes)}")
    previous = ctx.previous.automatic if ctx.previous else None  # decided again: the same mail
    ctx.automatic = previous or classify(parsed, ctx.spool.mail_from, own_loop_value=services.loop_value)
    if not ctx.automatic.is_automatic and (
            (services.addresses.is_own(parsed.from_addr) and services.settings.staff_by_email(parsed.from_addr) is None)
            or own_mail(parsed, services.signer)):
        # Mail "from" our own address that no employee sends from, or our own mail come back: a loop.
        ctx.automatic = Automatic(True, False, LOOP)
    if ctx.automatic.is_bounce and attribute.run(ctx):
        return
    if ctx.automatic.is_bounce and not ctx.hints.get("triage"):  # unless staff decided what it is (route)
        ctx.finish(TRIAGE, REASON_BOUNCE, triage_status=TRIAGE_AWAITING_REVIEW, link=LINK_BOUNCE)
        report = ctx.automatic.report
        ctx.plan.triage_detail = report.summary() if report else ""
        ctx.record(STEP, LINK_BOUNCE, TRIAGE)
        return
    ctx.record(STEP, LINK_AUTOMATIC, ctx.automatic.reason if ctx.automatic.is_automatic else PERSON)
