"""Parse raw bytes into what the pipeline reads: decoded headers, body text, attachments.

Never raises on bad input: what had to be worked around is listed in
`ParsedMessage.defects`.
"""

import re
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses

MSGID_RE = re.compile(r"<[^<>\s]+>")
TAG_RE = re.compile(r"<[^>]+>")


@dataclass
class Attachment:
    name: str
    content_type: str
    size: int
    inline: bool = False


@dataclass
class ParsedMessage:
    msg: object
    subject: str = ""
    from_addr: str = ""
    from_name: str = ""
    to: list = field(default_factory=list)
    cc: list = field(default_factory=list)
    reply_to: list = field(default_factory=list)
    message_id: str = ""
    in_reply_to: list = field(default_factory=list)
    references: list = field(default_factory=list)
    text: str = ""
    attachments: list = field(default_factory=list)
    defects: list = field(default_factory=list)

    def header(self, name):
        """A header's decoded value ('' when absent or undecodable)."""
        try:
            value = self.msg.get(name)
        except Exception:  # a header the policy cannot parse
            return ""
        return "" if value is None else str(value)

    def has_header(self, name):
        return name in self.msg


def _header(msg, name, defects):
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception as exc:
        defects.append(f"header {name}: {exc}")
        raw = msg.get_all(name, failobj=[]) if hasattr(msg, "get_all") else []
        return " ".join(str(v) for v in raw)


def _addresses(msg, name, defects):
    try:
        values = msg.get_all(name, failobj=[])
    except Exception as exc:
        defects.append(f"header {name}: {exc}")
        return []
    pairs = getaddresses([str(v) for v in values])
    return [(n, a.lower()) for n, a in pairs if "@" in a]


def _html_to_text(html):
    html = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    html = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</li>", "\n", html)
    return TAG_RE.sub("", html)


def _body(msg, defects):
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception as exc:
        defects.append(f"body: {exc}")
        part = None
    if part is None:
        return ""
    try:
        content = part.get_content()
    except Exception as exc:
        defects.append(f"body decode: {exc}")
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace")
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = _html_to_text(content)
    return content


def _attachments(msg, defects):
    found = []
    try:
        parts = list(msg.iter_attachments()) if msg.is_multipart() else []
    except Exception as exc:
        defects.append(f"attachments: {exc}")
        return found
    for part in parts:
        try:
            name = part.get_filename() or ""
            payload = part.get_payload(decode=True) or b""
        except Exception as exc:
            defects.append(f"attachment: {exc}")
            continue
        found.append(Attachment(name, part.get_content_type(), len(payload),
                                part.get_content_disposition() == "inline"))
    return found


def parse_message(raw):
    """Parse `raw` (bytes) into a `ParsedMessage`; never raises on malformed mail."""
    defects = []
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    defects.extend(type(d).__name__ for d in msg.defects)
    senders = _addresses(msg, "from", defects)
    from_name, from_addr = senders[0] if senders else ("", "")
    return ParsedMessage(
        msg=msg,
        subject=_header(msg, "subject", defects),
        from_addr=from_addr,
        from_name=from_name,
        to=[a for _, a in _addresses(msg, "to", defects)],
        cc=[a for _, a in _addresses(msg, "cc", defects)],
        reply_to=[a for _, a in _addresses(msg, "reply-to", defects)],
        message_id=(MSGID_RE.findall(_header(msg, "message-id", defects)) or [""])[0],
        in_reply_to=MSGID_RE.findall(_header(msg, "in-reply-to", defects)),
        references=MSGID_RE.findall(_header(msg, "references", defects)),
        text=_body(msg, defects),
        attachments=_attachments(msg, defects),
        defects=defects,
    )
