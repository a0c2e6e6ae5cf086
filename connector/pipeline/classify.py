"""Step 2: duplicates and automatic mail.

A Message-ID already filed with the same bytes is a duplicate (logged, not
filed again); the same Message-ID with other bytes is a different message and
is processed. Mail without a Message-ID is keyed by its bytes alone, so an
MTA that retries after a lost 250 still files it once. Automatic mail
(bounces, auto-replies, lists) is never answered; a bounce never creates a
ticket.
"""

from connector.mail.automatic import LOOP, Automatic, classify
from connector.pipeline.context import DUPLICATE, R_BOUNCE, TRIAGE
from connector.store.models import TRIAGE_AWAITING_REVIEW
from connector.store.queries import find_duplicate


def run(ctx):
    parsed = ctx.parsed
    original = find_duplicate(parsed.message_id, ctx.spool.sha256, ctx.spool.id)
    if original is not None:
        same = "same Message-ID and bytes" if parsed.message_id else "no Message-ID, same bytes"
        ctx.finish(DUPLICATE, f"{same} as spool entry {original}", distribute=False)
        return
    ctx.automatic = classify(parsed, ctx.spool.mail_from, own_loop_value=ctx.services.loop_value)
    if not ctx.automatic.is_automatic and ctx.services.is_own(parsed.from_addr) \
            and ctx.services.settings.staff_by_email(parsed.from_addr) is None:
        # Mail "from" our own address that no employee sends from: a loop.
        ctx.automatic = Automatic(True, False, LOOP)
    if ctx.automatic.is_bounce:
        ctx.finish(TRIAGE, R_BOUNCE, triage_status=TRIAGE_AWAITING_REVIEW, distribute=False)
