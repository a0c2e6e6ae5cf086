"""Step 5: the decision. Seed 004 (customer / employee correspondence, internal
mail, public flag) and seed 000 (what cannot be routed goes to triage).

Routing is data: `LINKS`, an ordered list of named links (condition ->
action, reason), tried in order; the first whose condition holds fires and
sets the plan. Each link tried is recorded in the trace (`replay --dry-run
--json`), and the decision's log line names the one that fired (`link`).
The README's routing table is `table()` (a test keeps them equal).

Reads: the parsed message, the automatic-mail verdict, the sender, the
referenced ticket (`ctx.ticket`, `plan.ticket_number`, `ref_via`), the
envelope, the spool entry's scanner hints.
Sets: `plan.action`, `reason`, `link`, `public`, `internal`, `set_inbox`,
`distribute`, `triage_status`, `ticket_number` and `new_ticket` (a new
ticket: the number it gets, read now and checked again under the filing
lock), `ticket_changes` (scanner rule fields, inbox).
"""

from dataclasses import dataclass
from typing import Callable

from connector.pipeline.context import (
    CONTACT_ONLY, FILED, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, REASON_CC_ONLY, REASON_CONTACT_ONLY,
    REASON_CUSTOMER, REASON_EMPLOYEE, REASON_KEYWORD, REASON_NEW, REASON_NOTIFICATIONS, REASON_SCANNER_RULE,
    REASON_STAFF_NO_TICKET, REASON_TRIAGE_ATTACHED, REASON_TRIAGE_NEW, REASON_UNAUTHENTICATED_STAFF,
    REASON_UNKNOWN_SENDER, REASON_UNKNOWN_TICKET, TRIAGE, VIA_SUBJECT)
from connector.store.filing import contact_email, is_external_recipient
from connector.store.models import TICKET_NEW, TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED
from connector.store.queries import next_ticket_number
from connector.workqueue import inbox

STEP = "route"
NOT_FIRED = "no"
TICKET_FIELDS = ("status", "manager", "priority")   # what a scanner rule may set on the ticket
NO_SUBJECT = "(no subject)"
AUTOMATIC_REASON = "the automatic-mail reason"      # how the table names a reason read from the mail


@dataclass(frozen=True)
class Link:
    name: str
    when: str                                   # the condition in words (the README's table)
    condition: Callable                         # ctx -> bool
    action: str
    reason: str
    fire: Callable = None                       # ctx -> None: the plan beyond action and reason


def delivered_to(ctx):
    """Who the message was delivered to: the envelope recipients of this copy and of its
    earlier copies together (`classify` collects them), else the To/Cc headers (IMAP)."""
    return ctx.envelope or ctx.spool.rcpt_to or (ctx.parsed.to + ctx.parsed.cc)


def addressed_to_notifications_only(ctx):
    return ctx.services.addresses.notifications_only(delivered_to(ctx))


def has_keyword(ctx):
    keyword = ctx.services.settings.internal_keyword
    return bool(keyword) and keyword.lower() in (ctx.parsed.subject or "").lower()


def associated(ctx):
    """The sender is the ticket's contact, its account's main contact, or one of its external
    recipients (looked up once per message: several links ask)."""
    if ctx.associated is None:
        ctx.associated = _associated(ctx)
    return ctx.associated


def _associated(ctx):
    ticket, address = ctx.ticket, ctx.sender.address
    if address and contact_email(ticket) == address:
        return True
    if address and ticket.account and any(a.name == ticket.account and a.main_contact == address.lower()
                                          for a in ctx.services.settings.accounts):
        return True
    return is_external_recipient(ticket, address)


def vouched_by_rule(ctx):
    """A scanner rule's own `match` regex found this ticket in the subject.

    Seed 003: with a rule's regex, "if … such a ticket is found in the system,
    the scanner will link the email to that ticket": the administrator wrote
    the rule for this sender (a partner's system quoting our number), so it
    is filed even though the sender is not on the ticket. The default ticket
    tag never vouches: a stranger quoting a tag still goes to triage.
    """
    return bool(ctx.hints.get("ticket_match")) and ctx.ref_via == VIA_SUBJECT


# -- conditions ---------------------------------------------------------------

def _automatic(ctx):
    return ctx.automatic.is_automatic


def _referenced(ctx):
    return ctx.plan.ticket_number is not None


def _on_ticket(ctx):
    return ctx.ticket is not None


def _staff(ctx):
    return ctx.sender.is_staff


def _to_public(ctx):
    return any(ctx.services.addresses.is_public(a) for a in ctx.parsed.to)


def _customer_on_ticket(ctx):
    return _on_ticket(ctx) and not _staff(ctx) and (associated(ctx) or vouched_by_rule(ctx))


def _usable_address(ctx):
    address = ctx.sender.address
    return bool(address) and "@" in address


def _forced(ctx, action=None):
    """Staff decided what a triage item is (`connector.workqueue.triage`): hint `triage`."""
    forced = ctx.hints.get("triage")
    return bool(forced) and (action is None or forced["action"] == action)


def _attached(ctx, internal):
    forced = ctx.hints.get("triage")
    return bool(forced) and forced["action"] != NEW_TICKET and _on_ticket(ctx) and bool(forced.get("internal")) == internal


# -- what a link sets beyond action and reason ---------------------------------

def _triage(ctx):
    ctx.finish(ctx.plan.action, ctx.plan.reason, triage_status=TRIAGE_AWAITING_REVIEW)


def _unauthenticated(ctx):
    """Never filed, never distributed, no command run; the item's detail says why."""
    ctx.finish(ctx.plan.action, ctx.plan.reason, triage_status=TRIAGE_AWAITING_REVIEW,
               triage_detail=ctx.sender.unauthenticated)


def _ignore(ctx):
    ctx.finish(IGNORED_AUTOMATIC, ctx.automatic.reason, triage_status=TRIAGE_CLOSED)


def _contact_only(ctx):
    ctx.finish(CONTACT_ONLY, REASON_CONTACT_ONLY)


def _internal(ctx, set_inbox=False):
    plan = ctx.plan
    plan.public, plan.internal, plan.set_inbox = False, True, set_inbox


def _customer_internal(ctx):
    _internal(ctx, set_inbox=True)


def _follow_up(ctx, set_inbox):
    plan = ctx.plan
    plan.set_inbox = set_inbox
    if ctx.automatic.is_automatic:  # an out-of-office is filed, never distributed
        plan.distribute, plan.set_inbox = False, False
        if ctx.sender.is_staff:     # an employee's out-of-office is no customer history
            plan.public = False
        plan.reason += f",automatic:{ctx.automatic.reason}"


def _employee_follow_up(ctx):
    _follow_up(ctx, set_inbox=False)


def _customer_follow_up(ctx):
    _follow_up(ctx, set_inbox=True)


def _staff_attached(ctx):
    """Filed as the sender's follow-up; an automatic mail is on the record, never mailed on."""
    plan = ctx.plan
    plan.set_inbox = not ctx.sender.is_staff
    if plan.action == INTERNAL:
        plan.public, plan.internal = False, True
    if ctx.automatic.is_automatic:
        plan.distribute, plan.set_inbox = False, False


def _new_ticket(ctx):
    plan, account = ctx.plan, ctx.sender.account
    plan.set_inbox = True
    plan.ticket_number = next_ticket_number()   # checked again under the filing lock
    plan.new_ticket = {"subject": (ctx.parsed.subject or "").strip() or NO_SUBJECT, "status": TICKET_NEW,
                       "in_inbox": True, "account": account.name if account else None,
                       "manager": account.manager if account and account.manager else None}
    if has_keyword(ctx):
        plan.public, plan.internal = False, True
    # the inboxes it lands in (seed 001): by the address it was sent to, a scanner rule, the default
    plan.inboxes = [(target.name, why) for target, why in inbox.placement(
        inbox.config_of(ctx.services.settings), delivered_to(ctx), ctx.hints.get("assign_inbox"))]


LINKS = (
    Link("staff_new_ticket", "staff made a ticket of a triage item (`inbound create-ticket`)",
         lambda ctx: _forced(ctx, NEW_TICKET), NEW_TICKET, REASON_TRIAGE_NEW, _new_ticket),
    Link("staff_attached_internal", "staff attached a triage item, Not Public (`inbound attach --internal`)",
         lambda ctx: _attached(ctx, internal=True), INTERNAL, REASON_TRIAGE_ATTACHED, _staff_attached),
    Link("staff_attached", "staff attached a triage item to a ticket (`inbound attach`)",
         lambda ctx: _attached(ctx, internal=False), FOLLOW_UP, REASON_TRIAGE_ATTACHED, _staff_attached),
    Link("unauthenticated_staff", "an employee's From the MTA did not authenticate (`staff_authentication`)",
         lambda ctx: bool(ctx.sender.unauthenticated), TRIAGE, REASON_UNAUTHENTICATED_STAFF, _unauthenticated),
    Link("notifications_automatic", "automatic mail to the notifications address only",
         lambda ctx: _automatic(ctx) and addressed_to_notifications_only(ctx),
         IGNORED_AUTOMATIC, AUTOMATIC_REASON, _ignore),
    Link("notifications", "to the notifications address only",
         addressed_to_notifications_only, TRIAGE, REASON_NOTIFICATIONS, _triage),
    Link("contact_only", "a scanner rule says `create_ticket: false`",
         lambda ctx: ctx.hints.get("create_ticket") is False, CONTACT_ONLY, REASON_CONTACT_ONLY, _contact_only),
    Link("automatic_unrelated", "automatic, and no ticket or a sender neither staff nor associated",
         lambda ctx: _automatic(ctx) and not (_on_ticket(ctx) and (_staff(ctx) or associated(ctx))),
         IGNORED_AUTOMATIC, AUTOMATIC_REASON, _ignore),
    Link("unknown_ticket", "a reference to a ticket that does not exist",
         lambda ctx: _referenced(ctx) and not _on_ticket(ctx), TRIAGE, REASON_UNKNOWN_TICKET, _triage),
    Link("employee_keyword", "ticket, employee, internal keyword in the subject",
         lambda ctx: _on_ticket(ctx) and _staff(ctx) and has_keyword(ctx), INTERNAL, REASON_KEYWORD, _internal),
    Link("employee_cc_only", "ticket, employee, public address not in To",
         lambda ctx: _on_ticket(ctx) and _staff(ctx) and not _to_public(ctx), INTERNAL, REASON_CC_ONLY, _internal),
    Link("employee_follow_up", "ticket, employee (automatic: filed Not Public, not distributed)",
         lambda ctx: _on_ticket(ctx) and _staff(ctx), FOLLOW_UP, REASON_EMPLOYEE, _employee_follow_up),
    Link("unknown_sender", "ticket, sender not associated and no scanner rule vouching",
         lambda ctx: _on_ticket(ctx) and not _customer_on_ticket(ctx), TRIAGE, REASON_UNKNOWN_SENDER, _triage),
    Link("customer_keyword", "ticket, customer, internal keyword in the subject",
         lambda ctx: _on_ticket(ctx) and has_keyword(ctx), INTERNAL, REASON_KEYWORD, _customer_internal),
    Link("customer_follow_up", "ticket, sender is its contact, an external recipient or the account's main_contact "
         "(automatic: filed, not distributed)",
         lambda ctx: _on_ticket(ctx) and associated(ctx), FOLLOW_UP, REASON_CUSTOMER, _customer_follow_up),
    Link("scanner_rule_follow_up", "ticket named by a scanner rule's own `match` (seed 003)",
         _on_ticket, FOLLOW_UP, REASON_SCANNER_RULE, _customer_follow_up),
    Link("staff_without_ticket", "no reference, employee",
         _staff, TRIAGE, REASON_STAFF_NO_TICKET, _triage),
    Link("no_address", "no reference, no usable From address",
         lambda ctx: not _usable_address(ctx), TRIAGE, REASON_UNKNOWN_SENDER, _triage),
    Link("new_ticket", "no reference, anybody else (internal keyword: filed Not Public)",
         lambda ctx: True, NEW_TICKET, REASON_NEW, _new_ticket),
)


def run(ctx):
    for link in LINKS:
        if not link.condition(ctx):
            ctx.record(STEP, link.name, NOT_FIRED)
            continue
        plan = ctx.plan
        plan.action, plan.reason, plan.link = link.action, link.reason, link.name
        link.fire(ctx)
        if plan.action in FILED:
            plan.ticket_changes = _ticket_changes(ctx)
        ctx.record(STEP, link.name, plan.action)
        return


def _ticket_changes(ctx):
    """Columns of the ticket this message changes: the inbox, a scanner rule's fields."""
    changes = {"in_inbox": True} if ctx.plan.set_inbox and ctx.plan.action != NEW_TICKET else {}
    for name, value in (ctx.hints.get("ticket_fields") or {}).items():
        if name == "inbox":
            changes["in_inbox"] = bool(value)
        elif name in TICKET_FIELDS:
            changes[name] = value
    return changes


def table():
    """The routing table as the README shows it, from `LINKS`."""
    rows = ["| link | when | action | reason |", "|---|---|---|---|"]
    rows += [f"| `{link.name}` | {link.when} | {link.action} | {link.reason} |" for link in LINKS]
    return "\n".join(rows) + "\n"
