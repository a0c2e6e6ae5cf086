"""Step 7: who receives the message (seed 004, Ticket Recipients and Recipient Options).

Employee recipients honour each employee's `receive` option, read as a ladder:
    off             never
    subscribed      when in the ticket's Employee Recipients list
    manager         ... or when the ticket's manager (the default)
    account_manager ... or when the manager of the ticket's account
    all             every ticket
Inactive employees never receive; the sender never receives their own mail.
The members of an inbox a staff mail's `#forward` / `#inbox` hands the ticket
to receive that mail too (unless `off`): its text is usually written for them.
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

Every planned mail is whole here: envelope sender and recipients, To/Cc/Bcc,
From name and address, subject (ticket tag, and the internal keyword on
internal mail so that replies stay internal), Message-ID, the original
sender's address on copies to other people, and an auto-response's text
rendered from its template. `apply` composes the bytes from these values.

Reads: the plan so far (action, ticket number, public/internal, scanner
rule's manager), the sender, the ticket and its recipients, the budgets.
Sets: `plan.employee_recipients`, `plan.external_recipients` (who joins the
ticket), `plan.outgoing`; `plan.suppressed` and notes for what a budget stopped.
"""

from connector.outbound.compose import AUTO_RESPONSE_TEMPLATE, auto_response_text
from connector.pipeline import budget, commands
from connector.pipeline.context import FILED, FOLLOW_UP, NEW_TICKET, Outgoing
from connector.settings.schema import RECEIVE_ACCOUNT_MANAGER, RECEIVE_ALL, RECEIVE_MANAGER, RECEIVE_OFF
from connector.store.filing import employee_recipients as subscribed_employees, external_recipients
from connector.store.models import AUTO_RESPONSE, DISTRIBUTION, RECIPIENT_BCC, RECIPIENT_CC, RECIPIENT_TO
from connector.workqueue import inbox

STEP = "distribute"


def new_ticket_defaults(ctx):
    """Default Employee Recipients of a new ticket: manager, account manager, `receive: all` staff."""
    settings = ctx.services.settings
    account = ctx.sender.account
    emails = []
    if account and account.manager:
        emails.append(account.manager)
    emails += [s.email for s in settings.staff if s.receive == RECEIVE_ALL and s.active]
    return list(dict.fromkeys(emails))


def receives(member, subscribed, manager, account_manager):
    if not member.active or member.receive == RECEIVE_OFF:
        return False
    if member.receive == RECEIVE_ALL:
        return True
    mine = set(member.emails)
    if subscribed & mine:
        return True
    if member.receive in (RECEIVE_MANAGER, RECEIVE_ACCOUNT_MANAGER) and manager in mine:
        return True
    return member.receive == RECEIVE_ACCOUNT_MANAGER and account_manager in mine


def employee_recipients(ctx, manager, account_name, subscribed):
    """Emails of the employees who receive this ticket's mail, manager first; not the sender."""
    settings = ctx.services.settings
    account = next((a for a in settings.accounts if a.name == account_name), None)
    account_manager = account.manager if account else None
    skip = set(ctx.sender.staff.emails) if ctx.sender.is_staff else {ctx.sender.address}
    handed = set(commands.handed_to(ctx.plan.commands, settings))
    chosen, ctx.plan.handed_only = [], []
    for member in settings.staff:
        if skip & set(member.emails):
            continue
        if receives(member, set(subscribed), manager, account_manager):
            chosen.append(member.email)
        elif handed & set(member.emails) and member.active and member.receive != RECEIVE_OFF:
            chosen.append(member.email)
            ctx.plan.handed_only.append(member.email)  # dropped again if the hand-over is refused when it runs
    if manager in chosen:
        chosen.remove(manager)
        chosen.insert(0, manager)
    return chosen


def _joining(ctx):
    """(employee emails, (address, kind) pairs) joining the ticket's recipients: a new
    ticket's defaults and its sender, and with `add_recipients_from_headers` the To/Cc
    addresses of a person's mail (seed 004, optional)."""
    services, plan, sender = ctx.services, ctx.plan, ctx.sender.address
    employees, external = [], []
    if plan.action == NEW_TICKET:
        employees, external = new_ticket_defaults(ctx), [(sender, RECIPIENT_TO)]
    if services.settings.add_recipients_from_headers and not ctx.automatic.is_automatic:
        for kind, addresses in ((RECIPIENT_TO, ctx.parsed.to), (RECIPIENT_CC, ctx.parsed.cc)):
            for address in addresses:
                if address == sender or services.addresses.is_own(address):
                    continue
                member = services.settings.staff_by_email(address)
                if member is not None:
                    employees.append(member.email)
                else:
                    external.append((address, kind))
    return list(dict.fromkeys(employees)), external


def _ticket_state(ctx):
    """(manager, account name, subscribed employees, external recipients) as this mail finds them."""
    plan = ctx.plan
    rule_manager = plan.ticket_changes.get("manager")  # apply sets it on the ticket
    if plan.action == NEW_TICKET:
        new = plan.new_ticket
        return rule_manager or new["manager"], new["account"], new_ticket_defaults(ctx), \
            [(ctx.sender.address, RECIPIENT_TO)]
    ticket = ctx.ticket
    return rule_manager or ticket.manager, ticket.account, subscribed_employees(ticket), external_recipients(ticket)


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
    name = (name or "").strip()
    if len(name) > 1 and name[0] == name[-1] and name[0] in "\"'":   # 'Jane Doe' as some clients write it
        name = name[1:-1].strip()
    return "" if not name or "@" in name or name.lower() == (address or "").lower() else name


def run(ctx):
    plan = ctx.plan
    if plan.action in FILED:
        plan.employee_recipients, plan.external_recipients = _joining(ctx)
    if plan.action not in FILED or not plan.distribute:
        return ctx.record(STEP, STEP, "not distributed")
    _recipients(ctx)
    if (ctx.hints.get("triage") or {}).get("quiet"):  # `inbound create-ticket|attach --quiet`
        plan.outgoing = [o for o in plan.outgoing if o.kind != AUTO_RESPONSE] if plan.action == NEW_TICKET else []
        plan.notes.append("staff asked for --quiet: " + ("no auto-response" if plan.action == NEW_TICKET
                                                         else "no copies"))
    cause = budget.loop_cause(ctx)
    if cause:
        plan.notes.append(f"possible loop ({cause}): copies count against the loop budget")
        plan.outgoing = [kept for out in plan.outgoing if (kept := _within_loop_budget(ctx, out))]
    for out in plan.outgoing:
        _complete(ctx, out)
    ctx.record(STEP, STEP, f"{len(plan.outgoing)} outgoing")


def _within_loop_budget(ctx, out):
    """`out` without the recipients whose loop budget is spent (None when nobody is left)."""
    kept = set(budget.within_loop_budget(ctx, out.kind, out.rcpt))
    if not kept:
        return None
    out.rcpt, out.to, out.cc, out.bcc = ([a for a in group if a in kept] for group in (out.rcpt, out.to, out.cc, out.bcc))
    out.loop = True
    return out


def distribution_subject(ctx):
    """The copies' subject: the ticket tag once, and on internal mail the internal keyword,
    so that replies to it stay internal."""
    services, keyword = ctx.services, ctx.services.settings.internal_keyword
    subject = services.subject_with_tag(ctx.parsed.subject, ctx.plan.ticket_number)
    if ctx.plan.internal and keyword and keyword.lower() not in subject.lower():
        subject = f"{keyword} {subject}"
    return subject


def _complete(ctx, out):
    """Envelope sender, From address, Message-ID, subject and text of a planned mail."""
    services, plan = ctx.services, ctx.plan
    out.mail_from = out.from_address = services.settings.public_address
    out.message_id = services.signer.make(plan.ticket_number)
    if out.kind == AUTO_RESPONSE:
        sender = inbox.sender_of(plan.inboxes, settings=services.settings)
        if sender:  # the `sender` of the inbox the new ticket lands in (config/inboxes.yaml)
            out.from_address, out.from_name = sender[0], sender[1] or out.from_name
        out.template = AUTO_RESPONSE_TEMPLATE
        out.subject, out.body = auto_response_text(ctx.parsed, services, ctx.templates, plan.ticket_number,
                                                   plan.new_ticket["subject"])
    else:
        out.subject = distribution_subject(ctx)
        # Who really wrote it, for the people the copy is addressed to (never on a staff mail).
        out.original_from = "" if ctx.sender.is_staff or not (out.to or out.cc) else ctx.parsed.from_addr


def _recipients(ctx):
    """The planned mails and their recipients (seed 004), before the budgets."""
    plan, sender = ctx.plan, ctx.sender
    manager, account, subscribed, external = _ticket_state(ctx)
    employees = employee_recipients(ctx, manager, account, subscribed)
    from_name = _from_name(ctx)
    if sender.is_staff and plan.action == FOLLOW_UP:
        ext = [(a, k) for a, k in external if a != sender.address and not ctx.services.addresses.is_own(a)]
        to = [a for a, k in ext if k == RECIPIENT_TO]
        cc = [a for a, k in ext if k == RECIPIENT_CC]
        bcc = [a for a, k in ext if k == RECIPIENT_BCC] + employees
        if to or cc or bcc:
            plan.outgoing.append(Outgoing(DISTRIBUTION, to + cc + bcc, to, cc, bcc, from_name))
    elif employees:
        if sender.is_staff:  # internal mail from an employee: everybody in Bcc
            plan.outgoing.append(Outgoing(DISTRIBUTION, employees, [], [], employees, from_name))
        else:
            # Seed 004: "the Ticket Manager appears in the To field. Other employees appear
            # in Cc" -- also when the manager gets no copy (no manager, receive: off, ...).
            to = [employees[0]] if employees[0] == manager else []
            cc = employees[len(to):]
            plan.outgoing.append(Outgoing(DISTRIBUTION, employees, to, cc, [], from_name))
    if plan.action == NEW_TICKET and not ctx.automatic.is_automatic:
        address = sender.address
        if address and not ctx.services.addresses.is_own(address) \
                and budget.auto_response_allowed(ctx, AUTO_RESPONSE, address):
            plan.outgoing.append(Outgoing(AUTO_RESPONSE, [address], [address],
                                          from_name=ctx.services.settings.response_from_name, automatic=True))
