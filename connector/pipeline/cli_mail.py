"""Mail the CLI writes for an employee: `connector tickets note N --as EMAIL` and
`connector tickets reply N --as EMAIL` (issue 11; seed 003 "Replying to
Tickets by Email").

The command builds an RFC 5322 mail from the employee to the public address
with the ticket's tag in the subject, threaded on the ticket's latest
message, and spools it (intake `cli`, committed before the command exits 0)
with a hint saying what it is. The pipeline then files and distributes it
exactly like the employee's own mail (sender, reference, route, distribute:
the same code), with two differences: the CLI needs no
Authentication-Results header (the operator is on the server), and a note
is filed Not Public, to the employee recipients only, and recorded as
`note_added`. Events carry via `cli`.
"""

import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

CLI_HINT = "cli_mail"   # the spool hint: {"kind": NOTE | REPLY, "ticket": N, "by": EMAIL}
CLI_INTAKE = "cli"
NOTE = "note"
REPLY = "reply"


def kind_of(ctx):
    """NOTE, REPLY or '' (not written by the CLI)."""
    return (ctx.hints.get(CLI_HINT) or {}).get("kind", "") if ctx.spool.intake == CLI_INTAKE else ""


def build(services, ticket, staff, by, text, references, clock=time.time):
    """The raw mail of a note or reply by `staff` (writing as `by`) on `ticket`."""
    settings = services.settings
    mail = EmailMessage()
    mail["From"] = formataddr((staff.name, by))
    mail["To"] = settings.public_address
    # Without the internal keyword: a reply on a ticket opened with it would be filed internal.
    mail["Subject"] = services.subject_with_tag(services.without_keyword(ticket.subject), ticket.number)
    mail["Date"] = formatdate(clock(), localtime=True)
    mail["Message-ID"] = make_msgid("cli", domain=settings.public_address.rpartition("@")[2])
    if references:
        mail["In-Reply-To"] = references[-1]
        mail["References"] = " ".join(references[-20:])
    mail.set_content(text.rstrip("\n") + "\n", cte="quoted-printable")
    return mail.as_bytes(), mail["Message-ID"]
