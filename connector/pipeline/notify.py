"""Last step, run for every decision: seed 000's New Inbound Message Notice.

When a mail lands in triage, `triage_notice_to` gets a short notice, so
somebody reviews it, with `triage_notice_cc` in Cc. Never for bounces: a notice to an address that bounces
would otherwise feed itself. For the same reason never about an answer to
one of our notices, nor to the address that sent the mail, and at most
`notices_per_hour` to one address (`connector.pipeline.budget`).

Reads: the plan's action and reason, the parsed message, the budgets.
Sets: one NOTICE in `plan.outgoing` (from the notifications address, its
subject and text rendered from `templates/inbound_notice.txt.j2`);
`plan.suppressed` for the addresses a budget stopped. The triage item's id
(`item_id`, for `connector inbound show ID`) is the store's: `apply` renders
the notice again with it when it writes the item (`name_item`); a dry run
shows the notice without it.
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
    subject, body = notice_text(ctx)
    notifications = services.settings.notifications_address
    plan.outgoing.append(Outgoing(
        NOTICE, to + cc, to, cc, from_name=services.settings.response_from_name, from_address=notifications,
        mail_from=notifications, subject=subject, template=NOTICE_TEMPLATE, body=body,
        message_id=services.signer.make_notice(), automatic=True))
    ctx.record(STEP, STEP, SENT)


def notice_text(ctx, item_id=None):
    """(subject, body) of the notice about this mail; `item_id`: its triage item's, once known."""
    plan = ctx.plan
    subject, body = inbound_notice_text(ctx.parsed, ctx.services, ctx.templates, plan.reason, plan.ticket_number,
                                        item_id)
    return subject or f"New inbound message ({plan.reason}): {ctx.parsed.subject}", body


def name_item(ctx, item_id):
    """The planned notice rendered again with its triage item's id, which is the store's: `apply`
    calls this once it wrote the item, before the notice's row (as it adds an auto-email's event id)."""
    for out in ctx.plan.outgoing:
        if out.kind == NOTICE and out.template == NOTICE_TEMPLATE:
            out.subject, out.body = notice_text(ctx, item_id)
