"""Last step, run for every decision: seed 000's New Inbound Message Notice.

When a mail lands in triage, `triage_notice_to` gets a short notice, so
somebody reviews it. Never for bounces: a notice to an address that bounces
would otherwise feed itself. For the same reason never about an answer to
one of our notices, nor to the address that sent the mail, and at most
`notices_per_hour` to one address (`connector.pipeline.budget`).
"""

from connector.pipeline import budget
from connector.pipeline.context import R_BOUNCE, TRIAGE, Outgoing

NOTICE = "notice"


def run(ctx):
    addresses = ctx.services.settings.triage_notice_to
    if ctx.action != TRIAGE or ctx.reason == R_BOUNCE or not addresses:
        return
    allowed = [a for a in addresses if budget.notice_allowed(ctx, NOTICE, a)]
    if allowed:
        ctx.outgoing.append(Outgoing(NOTICE, allowed, allowed,
                                     from_name=ctx.services.settings.response_from_name, automatic=True,
                                     subject=f"New inbound message ({ctx.reason}): {ctx.parsed.subject}"))
