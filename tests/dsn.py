"""Delivery status notifications (RFC 3464) as a remote MTA writes them, for the
bounce tests (tests/test_verp*.py, tests/test_blocks*.py)."""

import itertools

_serial = itertools.count(1)


def dsn(failed, status="5.1.1", diagnostic="550 5.1.1 <{address}>: Recipient address rejected: User unknown",
        original_message_id="", action="failed", reporting="mx.acme.example", to="support@example.com"):
    """The bytes of a bounce for `failed` (an address); `original_message_id` is quoted in the returned headers."""
    n = next(_serial)
    returned = (f"Message-ID: {original_message_id}\nSubject: whatever\nFrom: support@example.com\n"
                if original_message_id else "Subject: whatever\n")
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@{reporting}>
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn{n}.{id(returned)}@{reporting}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B{n}"

--B{n}
Content-Type: text/plain

This is the mail system at host {reporting}.
I'm sorry to have to inform you that your message could not be delivered.

--B{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporting}

Final-Recipient: rfc822; {failed}
Original-Recipient: rfc822; {failed}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic.format(address=failed)}

--B{n}
Content-Type: text/rfc822-headers

{returned}
--B{n}--
""".replace("\n", "\r\n").encode()
