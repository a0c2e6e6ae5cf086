"""Compose outgoing mail: redistribution of an inbound mail, and auto-responses.

A redistributed mail keeps the original body bytes (formatting, attachments,
seed 004: "distributed ... in its original form"); only the header block is
rewritten: From is `Name <public_address>`, Reply-To the public address, the
subject carries the ticket tag, transport and authentication headers of the
original are dropped, and a fresh Message-ID threads with the original.
"""

import re
from email import policy
from email.message import EmailMessage
from email.headerregistry import Address
from email.utils import format_datetime, localtime

import jinja2

# Headers of the original that must not travel with the redistributed copy.
DROP_HEADERS = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "in-reply-to", "references",
    "date", "sender", "return-path", "received", "dkim-signature", "domainkey-signature",
    "authentication-results", "arc-seal", "arc-message-signature", "arc-authentication-results",
    "received-spf", "delivered-to", "x-original-to", "envelope-to", "errors-to",
    "disposition-notification-to", "return-receipt-to", "x-loop", "auto-submitted",
    "precedence", "list-id", "list-unsubscribe", "list-post", "list-help", "list-archive",
    "list-subscribe", "list-owner", "x-connector-original-from",
}
SEPARATOR_RE = re.compile(rb"\r?\n\r?\n")
HEADER_LINE_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:")
REPLY_ABOVE = "##- Please type your reply above this line -##"


def split_message(raw):
    """(header lines as a list of raw unfolded-header chunks, body bytes)."""
    match = SEPARATOR_RE.search(raw)
    head, body = (raw[:match.start()], raw[match.end():]) if match else (raw, b"")
    headers = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\r\n" + line
        elif line:
            headers.append(line)
    return headers, body


def _header_block(fields):
    msg = EmailMessage(policy=policy.SMTP)
    for name, value in fields:
        if value:
            msg[name] = value
    return bytes(msg).rstrip(b"\r\n") + b"\r\n"


def _threading(parsed, message_id):
    refs = list(dict.fromkeys(parsed.references + ([parsed.message_id] if parsed.message_id else [])))
    return [("Message-ID", message_id),
            ("In-Reply-To", parsed.message_id),
            ("References", " ".join(refs[-20:]))]


def public_from(services, name):
    return str(Address(display_name=name or "", addr_spec=services.settings.public_address))


def redistribution(raw, parsed, out, services, message_id, original_from=""):
    """The original mail, re-addressed for `out` (an `Outgoing`)."""
    headers, body = split_message(raw)
    kept = [h for h in headers
            if (m := HEADER_LINE_RE.match(h)) and m.group(1).decode("ascii").lower() not in DROP_HEADERS]
    fields = [
        ("From", public_from(services, out.from_name)),
        ("Reply-To", services.settings.public_address),
        ("To", ", ".join(out.to) if out.to else "undisclosed-recipients:;"),
        ("Cc", ", ".join(out.cc)),
        ("Subject", out.subject),
        ("Date", format_datetime(localtime())),
    ] + _threading(parsed, message_id) + [
        ("X-Loop", services.loop_value),
        ("X-Connector-Original-From", original_from),
    ]
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _header_block(fields) + b"\r\n".join(kept) + (b"\r\n" if kept else b"") + b"\r\n" + body


class Templates:
    """jinja2 mail templates: the first line is `Subject: ...`, then a blank line, then the body."""

    def __init__(self, folders):
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(f) for f in folders]),
                                      undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                      autoescape=False)

    def render(self, name, **values):
        text = self.env.get_template(name).render(**values)
        head, _, body = text.partition("\n\n")
        subject = head.partition("Subject:")[2].strip() if head.startswith("Subject:") else ""
        return subject, body


def auto_response(parsed, out, services, templates, ticket, message_id):
    values = {
        "ticket": {"number": ticket.number, "subject": ticket.subject, "tag": services.tag(ticket.number)},
        "sender": {"name": parsed.from_name, "address": parsed.from_addr},
        "message": {"subject": parsed.subject},
        "settings": {"public_address": services.settings.public_address,
                     "response_from_name": services.settings.response_from_name},
        "reply_above": REPLY_ABOVE,
    }
    subject, body = templates.render("auto_response.txt.j2", **values)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = public_from(services, out.from_name)
    msg["Reply-To"] = services.settings.public_address
    msg["To"] = ", ".join(out.to)
    msg["Subject"] = services.subject_with_tag(subject or parsed.subject, ticket.number)
    msg["Date"] = format_datetime(localtime())
    for name, value in _threading(parsed, message_id):
        if value:
            msg[name] = value
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = services.loop_value
    msg.set_content(body)
    return msg["Subject"], body, bytes(msg)
