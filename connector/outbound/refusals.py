"""A relay's refusal of a recipient, reported the way an MTA would: a delivery
status notification (RFC 3464) into our own spool.

Where it stands: `connector.outbound.delivery` records each row's outcome.
When, in that attempt, the relay refused a recipient for good at RCPT or DATA
for a reason about the recipient (RECIPIENT_REASONS: the address does not
exist or moved, its domain does not exist, its mailbox is full or suspended),
`report` writes one report for the row, to the row's VERP address, in the same
transaction. The worker files it like any bounce that comes back later
(`connector.pipeline.attribute`): the row becomes `bounced` with the reason,
the ticket gets `delivery_failed`, the address is blocked as its reason says,
and the ticket's employees are told. So a smarthost that checks recipients
(Microsoft 365, most providers) and a DSN from the far end take one path,
decided in one place.

A refusal about us or our relay (relaying denied, authentication, our
sender or content refused, a mail given up after `give_up_after`) is not a
bounce of the customer's address: the row stays `failed`, `connector status`
says so, and an operator looks.
"""

import hashlib
import re
import time
from email.utils import formatdate

from connector.mail.bounce import reason_for
from connector.outbound.replies import REFUSED
from connector.store import blocks
from connector.store.spool import store_messages

INTAKE = "relay"        # the spool's intake of these reports
RECIPIENT_REASONS = blocks.HARD + ("mailboxfull", "suspend")
STATUS_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def status_of(reply):
    """The enhanced status code of a reply (`550 5.1.1 ...` -> 5.1.1), else the reply class's (5.0.0)."""
    found = STATUS_RE.search(reply.text or "")
    if found:
        return found.group(1)
    return f"{reply.code // 100}.0.0" if reply.code else "5.0.0"


def recipient_refusals(replies):
    """{address: (status, reason, reply)} of the recipients refused for a reason about them."""
    found = {}
    for address, reply in replies.items():
        if reply.outcome != REFUSED or reply.code is None:
            continue
        status = status_of(reply)
        reason = reason_for(status, str(reply), "RCPT TO")
        if reason in RECIPIENT_REASONS:
            found[address] = (status, reason, reply)
    return found


def _headers(raw):
    raw = bytes(raw)
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=len(raw))
    return raw[:end].replace(b"\r\n", b"\n").strip(b"\n")


def compose(entry, raw, refused, reporting_host, relay, now):
    """The bytes of the report for outbox row `entry` (its mail: `raw`) and its `refused` recipients."""
    boundary = "refused-" + hashlib.sha256(f"{entry.id}:{entry.attempts}".encode()).hexdigest()[:16]
    date = formatdate(now)
    listing = "\n".join(f"  {address}: {reply}" for address, (_, _, reply) in refused.items())
    fields = "\n".join(f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: {status}\n"
                       f"Remote-MTA: dns; {relay}\nDiagnostic-Code: smtp; {reply}\n"
                       for address, (status, _, reply) in refused.items())
    text = f"""\
From: Mail Delivery System <MAILER-DAEMON@{reporting_host}>
To: {entry.mail_from}
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-ID: <refused.{entry.id}.{entry.attempts + 1}@{reporting_host}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=utf-8

The relay {relay} refused outbox row {entry.id} for good:
{listing}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporting_host}
Arrival-Date: {date}

{fields}
--{boundary}
Content-Type: text/rfc822-headers

"""
    return (text.encode("utf-8") + _headers(raw) + f"\n\n--{boundary}--\n".encode()).replace(b"\n", b"\r\n")


def report(entry, raw, replies, envelope_sender, settings, now=None):
    """Spool the report of this attempt's recipient refusals (in the caller's transaction);
    returns the refused addresses reported (none: nothing written)."""
    if not entry.mail_from:
        return []   # a mail sent with the null sender is never reported on (RFC 3461)
    refused = recipient_refusals(replies)
    if not refused:
        return []
    relay = f"{settings.relay_host}:{settings.relay_port}" if settings.mode == "smtp" else settings.mode
    report_raw = compose(entry, raw, refused, settings.hostname, relay, time.time() if now is None else now)
    store_messages([(report_raw, None)], mail_from="", rcpt_to=[envelope_sender], intake=INTAKE)
    return list(refused)
