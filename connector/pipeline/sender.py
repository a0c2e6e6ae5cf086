"""Step 3: who sent it. An active employee when the From address is one of an
active staff member's emails (seed 004, Employee Correspondence); otherwise a
contact, known or to be created, linked to an account by its domain.

With `[security] staff_authentication = authentication_results` an
employee's address counts as theirs only when the site's MTA authenticated
the From domain (`connector.mail.authentication`); otherwise the sender is
nobody's (`unauthenticated` says why) and `route` sends the mail to triage
(`unauthenticated_staff`): a forged From neither commands nor mails customers
in the company's name. Mail the CLI wrote (`tickets note|reply`, intake
`cli`) is the operator's own and needs no header.
"""

from connector.log import get_logger
from connector.mail.authentication import from_domain_failure
from connector.pipeline.cli_mail import CLI_INTAKE
from connector.pipeline.context import Sender
from connector.store.queries import contact_by_email

log = get_logger("pipeline")

FROM_ONLY = "from"


def unauthenticated(ctx):
    """Why this employee's mail does not count as theirs ('' when it does)."""
    if ctx.services.settings.staff_authentication == FROM_ONLY or ctx.spool.intake == CLI_INTAKE:
        return ""
    return from_domain_failure(ctx.parsed, ctx.services.trusted_authserv_ids)


def run(ctx):
    settings = ctx.services.settings
    address = ctx.parsed.from_addr
    staff = settings.staff_by_email(address) if address else None
    if staff is not None and (why := unauthenticated(ctx)):
        log.warning("staff.unauthenticated", sender=address, why=why)
        ctx.notes.append(f"unauthenticated staff address: {why}")
        ctx.sender = Sender(address=address, name=ctx.parsed.from_name, unauthenticated=why)
        return
    contact = None if staff or not address else contact_by_email(address)
    ctx.sender = Sender(address=address, name=ctx.parsed.from_name, staff=staff, contact=contact,
                        account=None if staff or not address else settings.account_for(address))
