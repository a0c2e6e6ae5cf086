"""Step 3: who sent it. An active employee when the From address is one of an
active staff member's emails (seed 004, Employee Correspondence); otherwise a
contact, known or to be created, linked to an account by its domain.

With `[security] staff_authentication = authentication_results` an
employee's address counts as theirs only when the site's MTA authenticated
the From domain (`connector.mail.authentication`); otherwise the sender is
nobody's (`unauthenticated` says why) and route's `unauthenticated_staff`
link sends the mail to triage: a forged From neither commands nor mails
customers in the company's name. Mail the CLI wrote (`tickets note|reply`,
intake `cli`) is the operator's own and needs no header, and so is a triage
item's mail staff file themselves (hint `triage`): they vouched for it.

Reads: the parsed From and its Authentication-Results headers, settings
(staff, accounts, staff_authentication), the contacts.
Sets: `ctx.sender` (a `Sender`); a note when an employee's From is not authenticated.
"""

from connector.log import get_logger
from connector.mail.authentication import from_domain_failure
from connector.pipeline.cli_mail import CLI_INTAKE
from connector.pipeline.context import Sender
from connector.store.queries import contact_by_email

log = get_logger("pipeline")

STEP = "sender"
EMPLOYEE, CONTACT, KNOWN_CONTACT, NO_ADDRESS = "employee", "new_contact", "known_contact", "no_address"
UNAUTHENTICATED = "unauthenticated_employee"
FROM_ONLY = "from"


def unauthenticated(ctx):
    """Why this employee's mail does not count as theirs ('' when it does)."""
    if ctx.services.settings.staff_authentication == FROM_ONLY or ctx.spool.intake == CLI_INTAKE \
            or ctx.hints.get("triage"):
        return ""
    return from_domain_failure(ctx.parsed, ctx.services.trusted_authserv_ids)


def run(ctx):
    settings = ctx.services.settings
    address = ctx.parsed.from_addr
    staff = settings.staff_by_email(address) if address else None
    if staff is not None and (why := unauthenticated(ctx)):
        log.warning("staff.unauthenticated", sender=address, why=why)
        ctx.plan.notes.append(f"unauthenticated staff address: {why}")
        ctx.sender = Sender(address=address, name=ctx.parsed.from_name, unauthenticated=why)
        return ctx.record(STEP, STEP, UNAUTHENTICATED)
    contact = None if staff or not address else contact_by_email(address)
    ctx.sender = Sender(address=address, name=ctx.parsed.from_name, staff=staff, contact=contact,
                        account=None if staff or not address else settings.account_for(address))
    kind = EMPLOYEE if staff else KNOWN_CONTACT if contact else CONTACT if address else NO_ADDRESS
    ctx.record(STEP, STEP, kind)
