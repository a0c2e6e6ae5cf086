"""Compose outgoing mail: redistribution of an inbound mail, auto-responses, notices,
the results of staff commands.

Two halves: the deciding steps (`pipeline.distribute`, `pipeline.notify`,
`pipeline.commands`) render the text of an auto-response, a notice or a
command result from its template (`auto_response_text`,
`inbound_notice_text`, `Templates.render`) into the plan; `pipeline.apply`
turns each planned `Outgoing` into bytes (`redistribution`, `auto_response`,
`inbound_notice`, `command_reply`), using only the values the plan holds.

A redistributed mail keeps the original body bytes (formatting, attachments,
seed 004: "distributed ... in its original form"); only the header block is
rewritten: From is `Name <public_address>`, Reply-To the public address, the
subject carries the ticket tag, transport and authentication headers of the
original are dropped, and a fresh Message-ID threads with the original.

No header we write carries a control character: values decoded from mail are
clean already (`connector.mail.decode.clean_text`); every value is cleaned
once more here, display names before they are encoded (an encoded CR/LF is
still a CR/LF to the reader), and a bare CR or NUL in a kept header line of the
original becomes a space. A value that needed cleaning here is logged
(`outbound.header_cleaned`): it means a path around the parser.
"""

import base64
import email
import email.encoders
import email.generator
import email.policy
import io
import os
import quopri
import re
import time
from email.charset import Charset
from email.header import Header
from email.utils import formataddr, formatdate
from pathlib import Path

import jinja2

from connector.log import get_logger
from connector.mail.decode import clean_text

log = get_logger("outbound")

# The only headers of the original a redistributed copy carries (an allow-list: a stranger
# must not choose headers of mail we send, e.g. Mail-Reply-To, Resent-From, spam scores):
# its MIME structure, Outlook's threading, and other connectors' loop markers.
KEEP_HEADERS = {"mime-version", "thread-index", "thread-topic", "x-connector-loop"}
KEEP_PREFIXES = ("content-",)
MAX_LINE = 998   # RFC 5322: a line of a mail we send is at most this long (without CRLF)
CRLF = "\r\n"
SEPARATOR_RE = re.compile(rb"\r?\n\r?\n")
HEADER_LINE_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:")
BARE_CONTROL_RE = re.compile(rb"\r(?!\n)|\x00")
REPLY_ABOVE = "##- Please type your reply above this line -##"
UTF8 = Charset("utf-8")
# Longest subject we write: email.header's encoding is slow on huge values (a 200 KB
# subject took 1.6 s) and no mail client shows more.
MAX_SUBJECT_CHARS = 1000
MAX_REFERENCES = 20  # References we write: the first (the ticket's root) and the last ones


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


def header_value(name, value):
    """`value` fit for header `name`: one line, no control character."""
    cleaned = clean_text(value).strip()
    if cleaned != value.strip():
        log.warning("outbound.header_cleaned", header=name)
    return cleaned


# Fields that hold addresses: an encoded word there is read as a name, not as the
# address, so an internationalized address is written in UTF-8 (RFC 6532); display
# names are encoded by `mailbox` already.
ADDRESS_FIELDS = {"From", "To", "Cc", "Reply-To", "X-Connector-Original-From"}


def capped_subject(subject):
    """`subject` as we write it: at most MAX_SUBJECT_CHARS, an ellipsis marking the cut."""
    return subject if len(subject) <= MAX_SUBJECT_CHARS else subject[:MAX_SUBJECT_CHARS - 1] + "…"


def _encode(name, value):
    """One header line, RFC 2047-encoded when not ASCII (or when it holds a literal '=?'
    that a reader would decode), folded by email.header."""
    value = header_value(name, value)
    if name == "Subject":
        value = capped_subject(value)
    if name in ADDRESS_FIELDS and not value.isascii():
        return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
    if value.isascii() and ("=?" not in value or name in ADDRESS_FIELDS):
        if len(value) + len(name) < 76:
            return f"{name}: {value}\r\n".encode("ascii")
        if "\t" not in value:
            return _folded(f"{name}: {value}").encode("ascii")
        return f"{name}: {Header(value, header_name=name).encode(linesep=CRLF)}\r\n".encode("ascii")
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode(linesep=CRLF)}\r\n".encode("ascii")


FOLD_AT = 78  # RFC 5322: lines of a header we write are folded to this length where they can be


def _folded(line):
    """An ASCII header line folded before a space wherever the line would pass FOLD_AT (a word
    longer than that stays whole), with its CRLF: what email.header writes for such a value,
    at a tenth of its cost (the References of every copy and auto-response pass 78)."""
    out, start, last = [], 0, None   # `last`: the latest space where this line may be folded
    position = line.find(" ", line.find(":") + 2)
    while position >= 0:
        if position - start > FOLD_AT and last is not None:
            out.append(line[start:last])
            start, last = last, None
            continue
        if line[position + 1:position + 2] not in ("", " "):   # never leave a line of spaces
            last = position
        position = line.find(" ", position + 1)
    if len(line) - start > FOLD_AT and last is not None:
        out.append(line[start:last])
        start = last
    out.append(line[start:])
    return CRLF.join(out) + CRLF


_date = [None, ""]  # (the second, its Date header value): one formatdate a second, not two a mail


def date_now():
    """The Date header value for now, in local time (as email.utils.formatdate writes it)."""
    second = int(time.time())
    if _date[0] != second:
        _date[:] = second, formatdate(second, localtime=True)
    return _date[1]


def _header_block(fields):
    return b"".join(_encode(name, value) for name, value in fields if value and value.strip())


def ticket_root(message_id, signer):
    """[the ticket's root Message-ID] for our `message_id` of a ticket's mail, else []."""
    number = signer.verify(message_id) if signer is not None else None
    return [] if number is None else [signer.ticket_root(number)]


def _threading(parsed, message_id, signer):
    """Message-ID, In-Reply-To the mail answered, References: the ticket's root first, then
    the answered mail's References and itself (the first and the last ones when too many)."""
    refs = list(dict.fromkeys(ticket_root(message_id, signer) + parsed.references +
                              ([parsed.message_id] if parsed.message_id else [])))
    if len(refs) > MAX_REFERENCES:
        refs = refs[:1] + refs[1 - MAX_REFERENCES:]
    return [("Message-ID", message_id),
            ("In-Reply-To", parsed.message_id),
            ("References", " ".join(refs))]


def mailbox(name, address):
    """`Name <address>` with a clean display name (encoded when not ASCII, or when it
    holds a literal '=?' that a reader would decode)."""
    name = header_value("From", name or "")
    if "=?" in name:   # one encoded word, as formataddr writes a non-ASCII name
        return f"{UTF8.header_encode(name)} <{address}>"
    return formataddr((name, address), charset="utf-8")


def _kept_line(match, line):
    """A header line of the original as the copy carries it: 'Name :' (obsolete syntax) as
    'Name:', where a strict reader would end the header block; MIME-Version as plain 1.0
    (its comments are noise, and thousands of nested ones crash readers that recurse)."""
    name = match.group(1)
    if name.lower() == b"mime-version":
        return b"MIME-Version: 1.0"
    return name + b":" + BARE_CONTROL_RE.sub(b" ", line[match.end():])


def redistribution(raw, parsed, out, services):
    """The original mail, re-addressed for `out` (an `Outgoing`: recipients, From, subject,
    Message-ID and original sender planned)."""
    headers, body = split_message(raw)
    kept = [_kept_line(m, h) for h in headers if (m := HEADER_LINE_RE.match(h)) and _kept(m.group(1))]
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if parsed.capped.get("depth") or any(d.endswith(" without parts") for d in parsed.defects):
        kept, body = _as_text(parsed)
    if any(len(line) > MAX_LINE for line in body.split(b"\r\n")) or \
            any(len(line) > MAX_LINE for h in kept for line in h.split(b"\r\n")):
        kept, body = _within_line_limit(kept, body)
    fields = [
        ("From", mailbox(out.from_name, out.from_address)),
        ("Reply-To", services.settings.public_address),
        ("To", ", ".join(out.to) if out.to else "undisclosed-recipients:;"),
        ("Cc", ", ".join(out.cc)),
        ("Subject", out.subject),
        ("Date", date_now()),
    ] + _threading(parsed, out.message_id, services.signer) + [
        ("X-Loop", services.loop_value),
        ("X-Connector-Original-From", out.original_from),
    ]
    return _header_block(fields) + b"\r\n".join(kept) + (b"\r\n" if kept else b"") + b"\r\n" + body


def _as_text(parsed):
    """A copy of a mail whose MIME structure readers cannot walk (nested deeper than the parse
    reads, a multipart without its boundary): its text, and where the original is."""
    note = ("[The connector forwards this message as text: its MIME structure could not be read "
            "(nested too deeply or broken). The original is kept: connector message export.]")
    text = (parsed.text or "").strip()
    data = base64.encodebytes(f"{text}\n\n{note}\n".encode("utf-8"))
    return ([b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: base64"], data.replace(b"\n", b"\r\n"))


def _kept(name):
    name = name.decode("ascii").lower()
    return name in KEEP_HEADERS or name.startswith(KEEP_PREFIXES)


def _within_line_limit(kept, body):
    """The copy's MIME headers and body with no line over MAX_LINE: parts whose lines are
    longer (accepted as received: broken clients send them) are base64-encoded again, long
    header lines folded. A relay refuses longer lines (500 Line too long), so staff would
    never get the copy. Left as it was when it cannot be re-encoded (the row then fails alone)."""
    try:
        head = b"".join(h + b"\r\n" for h in kept)
        message = email.message_from_bytes(head + b"\r\n" + body, policy=email.policy.compat32)
        for part in message.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=False)
            if isinstance(payload, str) and any(len(line) > MAX_LINE for line in payload.splitlines()):
                data = part.get_payload(decode=True) or b""
                del part["Content-Transfer-Encoding"]
                part.set_payload(data)
                email.encoders.encode_base64(part)
        out = io.BytesIO()
        email.generator.BytesGenerator(out, mangle_from_=False, maxheaderlen=78).flatten(message)
        head, _, new_body = out.getvalue().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").partition(b"\r\n\r\n")
        return split_message(head + b"\r\n\r\n")[0], new_body
    except Exception as exc:  # a structure the parser cannot walk (e.g. nested past its limit)
        log.warning("outbound.long_lines_kept", error=f"{type(exc).__name__}: {exc}")
        return kept, body


class Templates:
    """jinja2 mail templates: the first line is `Subject: ...`, then a blank line, then the body.

    Every file of `folders` (the first folder holding a name wins) is read once,
    here: a template edited later takes effect only through a reload, which
    checks it first, never by jinja noticing the change by itself. `files`
    maps each name to the path it was read from (errors name it).
    """

    def __init__(self, folders):
        self.files, sources = {}, {}
        for folder in map(Path, folders):
            if folder.is_dir():
                os.listdir(folder)   # PermissionError when unreadable (rglob would skip it: silently shipped ones)
            for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
                name = path.relative_to(folder).as_posix()  # parts/footer.j2 for {% include %}
                if path.is_file() and name not in sources and not path.name.startswith("."):
                    sources[name] = path.read_text(encoding="utf-8")
                    self.files[name] = path

        def load(name):
            if name not in sources:
                return None
            return sources[name], str(self.files[name]), lambda: True

        self.env = jinja2.Environment(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=True, autoescape=False, auto_reload=False)

    def render(self, name, **values):
        text = self.env.get_template(name).render(**values)
        head, _, body = text.partition("\n\n")
        subject = head.partition("Subject:")[2].strip() if head.startswith("Subject:") else ""
        return subject, body


AUTO_RESPONSE_TEMPLATE = "auto_response.txt.j2"
NOTICE_TEMPLATE = "inbound_notice.txt.j2"


def auto_response_text(parsed, services, templates, number, ticket_subject):
    """(subject, body) of the auto-response to a new ticket `number`. The customer never
    sees the internal keyword: their reply would be filed internal."""
    values = {
        "ticket": {"number": number, "subject": services.without_keyword(ticket_subject),
                   "tag": services.tag(number)},
        "sender": {"name": parsed.from_name, "address": parsed.from_addr},
        "message": {"subject": services.without_keyword(parsed.subject)},
        "settings": {"public_address": services.settings.public_address,
                     "response_from_name": services.settings.response_from_name},
        "reply_above": REPLY_ABOVE,
    }
    subject, body = templates.render(AUTO_RESPONSE_TEMPLATE, **values)
    return services.subject_with_tag(subject or services.without_keyword(parsed.subject), number), body


def auto_response(parsed, out, services):
    """The auto-response `out` (subject and body planned) as bytes."""
    return _answer(parsed, out, services, [("Reply-To", services.settings.public_address)])


def command_reply(parsed, out, services):
    """The outcome of a staff mail's commands `out` (subject and body planned,
    `connector.pipeline.commands`), from the notifications address, as bytes."""
    return _answer(parsed, out, services, [])


def _answer(parsed, out, services, reply_to):
    """An automatic text answer to `parsed`: From, `reply_to`, To, Subject, Date, threading, our markers."""
    fields = [("From", mailbox(out.from_name, out.from_address))] + reply_to + [
        ("To", ", ".join(out.to)),
        ("Subject", out.subject),
        ("Date", date_now()),
    ] + _threading(parsed, out.message_id, services.signer) + [
        ("Auto-Submitted", "auto-replied"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Loop", services.loop_value),
    ] + TEXT_BODY_HEADERS
    return _header_block(fields) + b"\r\n" + _quoted_printable(out.body)


TEXT_BODY_HEADERS = [("MIME-Version", "1.0"), ("Content-Type", 'text/plain; charset="utf-8"'),
                     ("Content-Transfer-Encoding", "quoted-printable")]


def _quoted_printable(text):
    return quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8")).replace(b"\n", b"\r\n")


def inbound_notice_text(parsed, services, templates, reason, ticket_number, item_id=None):
    """(subject, body) of seed 000's New Inbound Message Notice; the subject is '' when the
    template has none. `item_id`: the triage item's id (`connector inbound show ID`), None
    while it is not written yet (a dry run); a template that does not use it works as before."""
    values = {
        "reason": reason, "ticket_number": ticket_number, "item_id": item_id,
        "message": {"subject": parsed.subject, "from_addr": parsed.from_addr, "from_name": parsed.from_name,
                    "message_id": parsed.message_id},
        "settings": {"public_address": services.settings.public_address,
                     "notifications_address": services.settings.notifications_address},
    }
    return templates.render(NOTICE_TEMPLATE, **values)


def auto_email(out, reply_to, loop_value, signer):
    """An automatic mail on a ticket event (`connector.workqueue.auto_emails`) as bytes: bulk,
    auto-generated, so no well-behaved system answers it; threaded on the ticket's root."""
    fields = [
        ("From", mailbox(out.from_name, out.from_address)),
        ("Reply-To", reply_to),
        ("To", ", ".join(out.to)),
        ("Subject", out.subject),
        ("Date", date_now()),
        ("Message-ID", out.message_id),
        ("References", " ".join(ticket_root(out.message_id, signer))),
        ("Auto-Submitted", "auto-generated"),
        ("Precedence", "bulk"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Loop", loop_value),
    ] + TEXT_BODY_HEADERS
    return _header_block(fields) + b"\r\n" + _quoted_printable(out.body)


def inbound_notice(out, services):
    """The notice `out` (subject and body planned) as bytes, from the notifications address."""
    fields = [
        ("From", mailbox(out.from_name, out.from_address)),
        ("To", ", ".join(out.to) if out.to else "undisclosed-recipients:;"),
        ("Cc", ", ".join(out.cc)),
        ("Subject", out.subject),
        ("Date", date_now()),
        ("Message-ID", out.message_id),
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Loop", services.loop_value),
    ] + TEXT_BODY_HEADERS
    return _header_block(fields) + b"\r\n" + _quoted_printable(out.body)
