"""Step 7: who receives the message (seed 004, Ticket Recipients and Recipient Options).

Employee recipients honour each employee's `receive` option, read as a ladder:
    off             never
    subscribed      when in the ticket's Employee Recipients list
    manager         ... or when the ticket's manager (the default)
    account_manager ... or when the manager of the ticket's account
    all             every ticket
Inactive employees never receive; the sender never receives their own mail.
Everybody else on the ticket gets the copy from the public address, even when
the original named them directly (seed 004: all mail goes through the
connector, and the copy that threads with the ticket is the one from it).

    from a customer (new ticket, follow-up): manager in To, other employees in Cc
    from an employee (public): external recipients with their To/Cc/Bcc,
                               other employees in Bcc
    internal: employees only (from an employee: Bcc; from a customer: To/Cc)

A scanner rule's `manager` is the ticket's manager for this mail already.
Copies of a mail that may be a loop, and auto-responses, are held to the
budgets of `connector.pipeline.budget`.
"""

from connector.pipeline import budget
from connector.pipeline.context import FOLLOW_UP, INTERNAL, NEW_TICKET, Outgoing
from connector.store.models import EmployeeRecipient, ExternalRecipient

AUTO_RESPONSE = "auto_response"
DISTRIBUTION = "distribution"


def new_ticket_defaults(ctx):
    """Default Employee Recipients of a new ticket: manager, account manager, `receive: all` staff."""
    settings = ctx.services.settings
    account = ctx.sender.account
    emails = []
    if account and account.manager:
        emails.append(account.manager)
    emails += [s.email for s in settings.staff if s.receive == "all" and s.active]
    return list(dict.fromkeys(emails))


def receives(member, subscribed, manager, account_manager):
    if not member.active or member.receive == "off":
        return False
    if member.receive == "all":
        return True
    mine = set(member.emails)
    if subscribed & mine:
        return True
    if member.receive in ("manager", "account_manager") and manager in mine:
        return True
    return member.receive == "account_manager" and account_manager in mine


def employee_recipients(ctx, manager, account_name, subscribed):
    """Emails of the employees who receive this ticket's mail, manager first; not the sender."""
    settings = ctx.services.settings
    account = next((a for a in settings.accounts if a.name == account_name), None)
    account_manager = account.manager if account else None
    skip = set(ctx.sender.staff.emails) if ctx.sender.is_staff else {ctx.sender.address}
    chosen = [m.email for m in settings.staff
              if receives(m, set(subscribed), manager, account_manager) and not skip & set(m.emails)]
    if manager in chosen:
        chosen.remove(manager)
        chosen.insert(0, manager)
    return chosen


def _ticket_state(ctx):
    """(manager, account name, subscribed employees, external recipients) as this mail leaves them."""
    rule_manager = (ctx.hints.get("ticket_fields") or {}).get("manager")  # apply sets it on the ticket
    if ctx.action == NEW_TICKET:
        account = ctx.sender.account
        manager = rule_manager or (account.manager if account and account.manager else None)
        return manager, account.name if account else None, ctx.employee_defaults, \
            [(ctx.sender.address, "to")]
    ticket = ctx.ticket
    subscribed = [r.email for r in EmployeeRecipient.select().where(EmployeeRecipient.ticket == ticket)]
    external = [(r.address, r.kind) for r in
                ExternalRecipient.select().where(ExternalRecipient.ticket == ticket).order_by(ExternalRecipient.id)]
    return rule_manager or ticket.manager, ticket.account, subscribed, external


def _from_name(ctx):
    """The display name on the copy sent from the public address.

    An employee's: seed 004 takes "the Sender Name from the Employee original
    Reply" (staff.yaml's name when the mail has none), or `response_from_name`
    with `sender_name = unified`. A customer's: their own name, or "ann at
    acme.example" (an @ in a display name looks like spoofing to mail clients).
    """
    settings = ctx.services.settings
    sender = ctx.sender
    if sender.is_staff:
        if settings.sender_name == "unified":
            return settings.response_from_name
        return own_name(sender.name, sender.address) or sender.staff.name
    return own_name(sender.name, sender.address) or sender.address.replace("@", " at ", 1)


def own_name(name, address):
    """A display name that is a name, not an address repeated."""
    name = (name or "").strip().strip('"\'').strip()
    return "" if not name or "@" in name or name.lower() == (address or "").lower() else name


def run(ctx):
    _plan(ctx)
    cause = budget.loop_cause(ctx)
    if cause:
        ctx.notes.append(f"possible loop ({cause}): copies count against the loop budget")
        ctx.outgoing = [kept for out in ctx.outgoing if (kept := _within_loop_budget(ctx, out))]
    for out in ctx.outgoing:
        out.subject = ctx.services.subject_with_tag(ctx.parsed.subject, ctx.ticket_number)


def _within_loop_budget(ctx, out):
    """`out` without the recipients whose loop budget is spent (None when nobody is left)."""
    kept = set(budget.within_loop_budget(ctx, out.kind, out.rcpt))
    if not kept:
        return None
    out.rcpt, out.to, out.cc, out.bcc = ([a for a in group if a in kept] for group in (out.rcpt, out.to, out.cc, out.bcc))
    out.loop = True
    return out


def _plan(ctx):
    if ctx.action == NEW_TICKET:
        ctx.employee_defaults = new_ticket_defaults(ctx)
    if ctx.action not in (NEW_TICKET, FOLLOW_UP, INTERNAL) or not ctx.distribute:
        return
    manager, account, subscribed, external = _ticket_state(ctx)
    employees = employee_recipients(ctx, manager, account, subscribed)
    from_name = _from_name(ctx)
    if ctx.sender.is_staff and ctx.action == FOLLOW_UP:
        ext = [(a, k) for a, k in external if a != ctx.sender.address and not ctx.services.is_own(a)]
        to = [a for a, k in ext if k == "to"]
        cc = [a for a, k in ext if k == "cc"]
        bcc = [a for a, k in ext if k == "bcc"] + employees
        if to or cc or bcc:
            ctx.outgoing.append(Outgoing(DISTRIBUTION, to + cc + bcc, to, cc, bcc, from_name))
    elif employees:
        if ctx.sender.is_staff:  # internal mail from an employee: everybody in Bcc
            ctx.outgoing.append(Outgoing(DISTRIBUTION, employees, [], [], employees, from_name))
        else:
            # Seed 004: "the Ticket Manager appears in the To field. Other employees appear
            # in Cc" -- also when the manager gets no copy (no manager, receive: off, ...).
            to = [employees[0]] if employees[0] == manager else []
            cc = employees[len(to):]
            ctx.outgoing.append(Outgoing(DISTRIBUTION, employees, to, cc, [], from_name))
    if ctx.action == NEW_TICKET and not ctx.automatic.is_automatic:
        address = ctx.sender.address
        if address and not ctx.services.is_own(address) and budget.auto_response_allowed(ctx, AUTO_RESPONSE, address):
            ctx.outgoing.append(Outgoing(AUTO_RESPONSE, [address], [address],
                                         from_name=ctx.services.settings.response_from_name,
                                         automatic=True))
