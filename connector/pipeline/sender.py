"""Step 3: who sent it. An active employee when the From address is one of an
active staff member's emails (seed 004, Employee Correspondence); otherwise a
contact, known or to be created, linked to an account by its domain.

Reads: the parsed From, settings (staff, accounts), the contacts.
Sets: `ctx.sender` (a `Sender`).
"""

from connector.pipeline.context import Sender
from connector.store.queries import contact_by_email

STEP = "sender"
EMPLOYEE, CONTACT, KNOWN_CONTACT, NO_ADDRESS = "employee", "new_contact", "known_contact", "no_address"


def run(ctx):
    settings = ctx.services.settings
    address = ctx.parsed.from_addr
    staff = settings.staff_by_email(address) if address else None
    contact = None if staff or not address else contact_by_email(address)
    ctx.sender = Sender(address=address, name=ctx.parsed.from_name, staff=staff, contact=contact,
                        account=None if staff or not address else settings.account_for(address))
    kind = EMPLOYEE if staff else KNOWN_CONTACT if contact else CONTACT if address else NO_ADDRESS
    ctx.record(STEP, STEP, kind)
