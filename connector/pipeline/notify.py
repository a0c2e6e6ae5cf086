"""Last step, run for every decision: seed 000's New Inbound Message Notice.

When a mail lands in triage, `triage_notice_to` gets a short notice, so
somebody reviews it, with `triage_notice_cc` in Cc. Never for bounces: a notice to an address that bounces
would otherwise feed itself. For the same reason never about an answer to
one of our notices, nor to the address that sent the mail, and at most
`notices_per_hour` to one address (`connector.pipeline.budget`).

Reads: the plan's action and reason, the parsed message, the budgets.
Sets: one NOTICE in `plan.outgoing` (from the notifications address, its
subject and text rendered from `templates/inbound_notice.txt.j2`);
`plan.suppressed` for the addresses a budget stopped.
"""

from connector.outbound.compose import NOTICE_TEMPLATE, inbound_notice_text
from connector.pipeline import budget
from connector.pipeline.context import REASON_BOUNCE, TRIAGE, Outgoing
from connector.store.models import NOTICE

STEP = "notify"
SENT, NONE = "notice", "none"


def run(ctx):
    plan, services = ctx.plan, ctx.services
    addresses = services.settings.triage_notice_to
    if plan.action != TRIAGE or plan.reason == REASON_BOUNCE or not addresses:
        return ctx.record(STEP, STEP, NONE)
    to = [a for a in addresses if budget.notice_allowed(ctx, NOTICE, a)]
    cc = [a for a in services.settings.triage_notice_cc
          if a not in addresses and budget.notice_allowed(ctx, NOTICE, a)]
    if not (to or cc):
        return ctx.record(STEP, STEP, NONE)
    subject, body = inbound_notice_text(ctx.parsed, services, ctx.templates, plan.reason, plan.ticket_number)
    notifications = services.settings.notifications_address
    plan.outgoing.append(Outgoing(
        NOTICE, to + cc, to, cc, from_name=services.settings.response_from_name, from_address=notifications,
        mail_from=notifications, subject=subject or f"New inbound message ({plan.reason}): {ctx.parsed.subject}",
        template=NOTICE_TEMPLATE, body=body, message_id=services.signer.make_notice(), automatic=True))
    ctx.record(STEP, STEP, SENT)
