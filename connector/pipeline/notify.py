"""Last step, run for every decision: seed 000's New Inbound Message Notice.

When a mail lands in triage, `triage_notice_to` gets a short notice, so
somebody reviews it. Never for bounces: a notice to an address that bounces
would otherwise feed itself.
"""

from connector.pipeline.context import R_BOUNCE, TRIAGE, Outgoing

NOTICE = "notice"


def run(ctx):
    addresses = ctx.services.settings.triage_notice_to
    if ctx.action == TRIAGE and ctx.reason != R_BOUNCE and addresses:
        ctx.outgoing.append(Outgoing(NOTICE, list(addresses), list(addresses),
                                     from_name=ctx.services.settings.response_from_name, automatic=True,
                                     subject=f"New inbound message ({ctx.reason}): {ctx.parsed.subject}"))
