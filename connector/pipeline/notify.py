"""Last step, run for every decision: seed 000's New Inbound Message Notice.

When a mail lands in triage, `triage_notice_to` gets a short notice, so
somebody reviews it, with `triage_notice_cc` in Cc. Never for bounces: a notice to an address that bounces
would otherwise feed itself. For the same reason never about an answer to
one of our notices, nor to the address that sent the mail, and at most
`notices_per_hour` to one address (`connector.pipeline.budget`).
"""

from connector.pipeline import budget
from connector.pipeline.context import R_BOUNCE, TRIAGE, Outgoing

NOTICE = "notice"


def run(ctx):
    settings = ctx.services.settings
    addresses = settings.triage_notice_to
    if ctx.action != TRIAGE or ctx.reason == R_BOUNCE or not addresses:
        return
    to = [a for a in addresses if budget.notice_allowed(ctx, NOTICE, a)]
    cc = [a for a in settings.triage_notice_cc if a not in addresses and budget.notice_allowed(ctx, NOTICE, a)]
    if to or cc:
        ctx.outgoing.append(Outgoing(NOTICE, to + cc, to, cc,
                                     from_name=ctx.services.settings.response_from_name, automatic=True,
                                     subject=f"New inbound message ({ctx.reason}): {ctx.parsed.subject}"))
