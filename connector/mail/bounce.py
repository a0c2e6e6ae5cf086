"""What a delivery report says: which recipients failed, why, and which mail it was.

Where it stands: step 2 of the pipeline (pipeline/classify.py) asks
mail/automatic.py whether a mail is automatic; for a report (a bounce, a delay
warning, a success notice, an abuse report) automatic.py asks `read_report`
here, and the answer rides on the `Automatic` result (`kind`, `report`) to the
triage item's detail and to `connector parse --json` (`automatic_kind`,
`bounce`). Nothing here writes anything.

How:
- an RFC 3464 `message/delivery-status` part is read with the stdlib email
  package: per recipient Final-/Original-Recipient, Action, Status and
  Diagnostic-Code; the Action says failed, delayed or delivered;
- without one (qmail, old Exim, Exchange's text reports, webmail), the failed
  addresses come from flufl.bounce (`all_failures`), else from the address
  nearest a failure sentence, and the diagnostic is the text around each
  address in the report's own words;
- the reason comes from rules/bounces.yaml (data, each rule with samples): a
  `status` rule on the DSN status code, a `text` rule on the diagnostic. A
  text rule wins over the status unless the status rule is `exact` (a code
  that says it all, e.g. 5.2.2 mailbox full); `delay_text` and
  `success_text` rules tell a text report's delay warning from a failure.
- `hard` is sisimai's: the address will never work (userunknown,
  hostunknown, hasmoved, and notaccept with a permanent status).
"""

import re
from dataclasses import dataclass, field
from email.utils import getaddresses

from connector.mail.decode import decode_bytes
from connector.mail.rules import LazyRuleFile

BOUNCE = "bounce"
DELAYED = "delayed"
DELIVERED = "delivered"
FEEDBACK = "feedback"
AUTO_REPLY = "auto_reply"
CHALLENGE_RESPONSE = "challenge_response"

UNDEFINED = "undefined"        # sisimai's reason when nothing says why
HARD_REASONS = ("userunknown", "hostunknown", "hasmoved")   # USER_UNKNOWN first
HARD_IF_PERMANENT = ("notaccept",)

RULES = LazyRuleFile("bounces.yaml", ("status", "status_exact", "text", "delay_text", "success_text",
                                        "after_data", "command"))
USER_UNKNOWN = "userunknown"
FILTERED = "filtered"          # "no such user" said after DATA: the recipient's filter, not a dead address
ONHOLD = "onhold"              # sisimai's reason when a report explains itself in words no rule knows
HOST_UNKNOWN = "hostunknown"
NETWORK_ERROR = "networkerror"  # a temporary DNS failure: the domain may well exist
EXPIRED = "expired"            # sisimai's reason for a delay nothing else explains

STATUS_RE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
GENERIC_STATUS_RE = re.compile(r"^[45]\.0\.0$")
REPLY_PREFIX_RE = re.compile(r"\b([245]\d\d)[- ]((?:[245]\.\d{1,3}\.\d{1,3} )?)")
REPLY_CODE_RE = re.compile(r"(?<![\d.])([245][0-5]\d)(?:[ -]|$)", re.M)
ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
FAILED_LINE_RE = re.compile(r"^[ \t]*<?([\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+)>?[ \t]*(?::|\.\.\.|\(|$)",
                            re.M)
UNSPLIT_DSN_RE = re.compile(r"^(?:reporting-mta|final-recipient|original-recipient):", re.I | re.M)
OWN_FAILED_LINE_RE = re.compile(r"^<([\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+)>:[ \t]*$", re.M)
MESSAGE_ID_ADDR_RE = re.compile(r"message-id:\s*<([^>\s]+)>", re.I)
MESSAGE_ID_RE = re.compile(r"^message-id:\s*(<[^>\s]+>)", re.I | re.M)
RETURNED_RE = re.compile(r"^[ \t>-]*(?:original message|message headers follow|below this line is a copy|"
                         r"the original message (?:headers )?(?:follows|is attached)|received: |return-path: )",
                         re.I | re.M)
ADDRESS_MARK = "<address>"     # what an address in a diagnostic reads as to the reason rules
LEAD = 80                      # characters before an address that belong to its line ("550 5.1.1 <")
WINDOW = 700                   # characters after an address that explain its failure
FALLBACK_TEXT = 2000           # characters read when the report never names the address
MAX_PARTS = 200                # parts of a report looked at
TEXT_LIMIT = 20000             # characters of a report's own text that are read
DELAYED_ACTIONS = ("delayed",)
RETURNED_PARTS = ("message/rfc822", "text/rfc822-headers")
SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")


@dataclass
class Recipient:
    address: str
    status: str = ""
    reply_code: str = ""
    reason: str = UNDEFINED
    permanent: bool = None
    hard: bool = False
    diagnostic: str = ""

    def as_json(self):
        return {"address": self.address, "status": self.status or None, "reply_code": self.reply_code or None,
                "reason": self.reason, "permanent": self.permanent, "hard": self.hard}


@dataclass
class Report:
    kind: str                                  # BOUNCE | DELAYED | DELIVERED | FEEDBACK
    recipients: list = field(default_factory=list)
    original_message_id: str = ""

    def as_json(self):
        return {"recipients": [r.as_json() for r in self.recipients],
                "original_message_id": self.original_message_id or None}

    def summary(self):
        """One line for a triage item's detail: 'a@x.example userunknown 5.1.1; ...'."""
        return "; ".join(" ".join(filter(None, (r.address, r.reason, r.status))) for r in self.recipients)


# -- the parts of a report ----------------------------------------------------

def _payload(part):
    try:
        return part.get_payload()
    except Exception:       # the stdlib decodes a text payload by its label: a broken one raises
        return None


def _children(part):
    payload = _payload(part)
    return payload if isinstance(payload, list) else []


def _kind(part):
    try:
        return part.get_content_type()
    except Exception:       # a broken Content-Type reads as text/plain, as the parser reads it
        return "text/plain"


def _walk(msg):
    """Every (content type, part), a message/* part's blocks included, depth first, at most
    MAX_PARTS: a report is small, and hostile mail must not make reading it slow."""
    stack, seen = [msg], 0
    while stack and seen < MAX_PARTS:
        part = stack.pop(0)
        seen += 1
        yield _kind(part), part
        stack[0:0] = [p for p in _children(part) if hasattr(p, "get_content_type")]


def _text_of(part):
    """A part's text, by the parser's own charset rules (a wrong or exotic label never raises)."""
    try:
        data = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except Exception:
        data, charset = None, None
    if data is None:
        payload = _payload(part)
        return payload if isinstance(payload, str) else ""
    return decode_bytes(data, charset)


def has_delivery_status(msg):
    """A message/delivery-status part anywhere (McAfee puts it in multipart/mixed)."""
    return any(kind == "message/delivery-status" for kind, _ in _walk(msg))


def returns_message(msg):
    """The mail carries a returned message (message/rfc822 or its headers as a part)."""
    return any(kind in RETURNED_PARTS for kind, _ in _walk(msg))


def _dsn_blocks(msg):
    """[(per-message fields, [per-recipient fields])] of the message/delivery-status parts."""
    found = []
    for kind, part in _walk(msg):
        if kind != "message/delivery-status":
            continue
        blocks = [b for b in _children(part) if hasattr(b, "items")]
        if not blocks or (len(blocks) == 1 and not blocks[0].items()):
            blocks = _parse_fields(_text_of(part))
        if blocks:
            found.append((blocks[0], blocks[1:] or blocks[:1]))
    return found


def _parse_fields(text):
    """Field blocks of a delivery-status body the parser left as text (e.g. base64)."""
    blocks, current, last = [], {}, None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[:1] in " \t" and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return [_Fields(b) for b in blocks]


class _Fields(dict):
    """A field block as a `get(name)` mapping, like an email.message block."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)

    def items(self):
        return list(super().items())


def _field(block, name):
    value = block.get(name)
    return re.sub(r"\s+", " ", str(value)).strip() if value is not None else ""


def _address_of(value):
    """The address of a Final-Recipient value ('rfc822; a@x.example')."""
    value = value.partition(";")[2] if ";" in value else value
    found = ADDRESS_RE.search(value.strip().strip("<>"))
    return found.group(0).lower() if found else ""


def original_message_id(msg):
    """The Message-ID of the mail that bounced, from the returned headers or message."""
    for kind, part in _walk(msg):
        if kind == "message/rfc822":
            for inner in _children(part):
                if inner.get("message-id"):
                    return str(inner.get("message-id")).strip()
        elif kind in ("text/rfc822-headers", "text/rfc822-header"):
            found = MESSAGE_ID_RE.search(_text_of(part))
            if found:
                return found.group(1)
    return ""


def report_text(msg):
    """The report's own words: its text parts before any returned message, lines ending in LF."""
    texts = []
    for kind, part in _walk(msg):
        if kind in ("message/rfc822", "text/rfc822-headers"):
            break
        if kind in ("text/plain", "text/html") or (kind.startswith("text/") and not texts):
            text = _text_of(part)
            if kind == "text/html":
                text = re.sub(r"<[^<>]*>", " ", text)
            texts.append(text)
            if sum(len(t) for t in texts) > TEXT_LIMIT:
                break
    if not texts and isinstance(_payload(msg), str) and _kind(msg).startswith("multipart/"):
        texts.append(_payload(msg))     # a multipart whose boundary the parser could not find: its raw text
    return "\n".join(texts)[:TEXT_LIMIT].replace("\r\n", "\n")     # rules read lines ending in \n


def _unsplit_dsn_blocks(text):
    """The delivery-status fields written in a report whose parts the parser could not split
    (a broken boundary): from the first per-message or per-recipient field to the next
    MIME boundary."""
    start = UNSPLIT_DSN_RE.search(text)
    if not start:
        return []
    end = re.compile(r"^--", re.M).search(text, start.start())
    blocks = _parse_fields(text[start.start():end.start() if end else len(text)])
    recipients = [b for b in blocks if b.get("final-recipient") or b.get("original-recipient")]
    return [(blocks[0], recipients)] if recipients else []


# -- reasons ------------------------------------------------------------------

def reason_for(status, diagnostic, context="", delayed=False):
    """The sisimai reason of one failure from its DSN status and diagnostic text (rules/bounces.yaml);
    `context` is what the report says around the address (which SMTP command was refused).

    Sisimai's order: a status that says it all; else the first text rule ("no such user" is
    `filtered` when the refusal came after DATA, "no such domain" with a 4.x.x status a
    network error); else the refused command (MAIL FROM: our sender, the greeting: our
    host); else the status's hint; else `onhold` when the report explains itself in words
    no rule knows, `expired` for a delay, `undefined` when nothing says why."""
    exact = RULES.first("status_exact", status) if status else None
    if exact:
        return exact.reason
    text = RULES.first("text", diagnostic) if diagnostic else None
    if text and text.reason == USER_UNKNOWN and context and RULES.any("after_data", context):
        return FILTERED
    if text and text.reason == HOST_UNKNOWN and status.startswith("4"):
        return NETWORK_ERROR
    if text:
        return text.reason
    command = RULES.first("command", context) if context else None
    if command:
        return command.reason
    hint = RULES.first("status", status) if status else None
    if hint:
        return hint.reason
    if delayed:
        return EXPIRED
    return ONHOLD if re.search(r"[^\W\d_]{3}", diagnostic or "") else UNDEFINED


def _codes_text(diagnostic, address):
    """Where a diagnostic's own status and reply code are read: from the address on when it
    names it (a text window starts a little before the address, in the previous recipient's
    words), else all of it."""
    at = diagnostic.lower().find(address.lower())
    after = diagnostic[at:] if at >= 0 else ""
    return after if STATUS_RE.search(after) or REPLY_CODE_RE.search(after) else diagnostic


def _unfold(diagnostic):
    """A multi-line SMTP reply as one sentence: "550-5.7.1 Messages with multiple 550-5.7.1
    addresses" (Gmail repeats its codes on every line) loses the repeated prefix."""
    diagnostic = re.sub(r"\s+", " ", diagnostic or "").strip()
    first = REPLY_PREFIX_RE.search(diagnostic)
    if not first:
        return diagnostic
    again = re.compile(r"(?<=\S) " + re.escape(first.group(1)) + r"[- ]" + re.escape(first.group(2) or "") + r"(?=\S)")
    return diagnostic[:first.end()] + again.sub(" ", diagnostic[first.end():])


def _recipient(address, status, diagnostic, permanent=None, reply_code="", context="", delayed=False):
    diagnostic = _unfold(diagnostic)
    codes = _codes_text(diagnostic, address)
    if not status or GENERIC_STATUS_RE.match(status):    # "5.0.0": the diagnostic's own code says more
        found = STATUS_RE.search(codes)
        status = found.group(1) if found and not GENERIC_STATUS_RE.match(found.group(1)) else status
    if not status:
        found = STATUS_RE.search(codes)
        status = found.group(1) if found else ""
    if not reply_code:
        found = REPLY_CODE_RE.search(codes)
        reply_code = found.group(1) if found else ""
    if permanent is None and (status or reply_code):
        permanent = (status or reply_code)[0] == "5"
    # the words decide, not the addresses in them ("spam@", "userunknown@" are mailboxes)
    reason = reason_for(status, ADDRESS_RE.sub(ADDRESS_MARK, diagnostic), ADDRESS_RE.sub(ADDRESS_MARK, context),
                        delayed)
    hard = reason in HARD_REASONS or (reason in HARD_IF_PERMANENT and permanent is True)
    return Recipient(address=address, status=status, reply_code=reply_code, reason=reason,
                     permanent=permanent, hard=bool(hard), diagnostic=diagnostic[:500])


def _window(text, address, others=()):
    """The report's words about `address`: from just before its first mention (not in the
    returned message) up to WINDOW characters on, or to the first mention of another
    of `others` (the next failed recipient's paragraph)."""
    text = _before_returned(text)
    lower = text.lower()
    at = lower.find(address.lower())
    if at < 0:
        return ""
    end = min(at + WINDOW, len(text))
    for other in others:
        if other != address:
            next_at = lower.find(other.lower(), at + len(address))
            if 0 <= next_at < end:
                end = next_at
    return text[max(0, at - LEAD):end]


def _from_dsn(blocks, text):
    """(kind, recipients) from the delivery-status fields; kind '' when no Action says."""
    failed, delayed, delivered = [], [], []
    named = [(block, _address_of(_field(block, "final-recipient")) or
              _address_of(_field(block, "original-recipient"))) for _, recipients in blocks for block in recipients]
    named = [(block, address) for block, address in named if address]
    addresses = [address for _, address in named]
    for block, address in named:
        action = _field(block, "action").lower()
        status = (STATUS_RE.search(_field(block, "status")) or [""])[0] if _field(block, "status") else ""
        diagnostic = _field(block, "diagnostic-code")     # "smtp; 550 ...": the type tells a local mailer
        context = _window(text, address, addresses)
        if not diagnostic.strip():
            diagnostic = context
        if action.startswith(DELAYED_ACTIONS) or (not action and status.startswith("4")
                                                  and RULES.any("delay_text", text)):
            delayed.append(_recipient(address, status, diagnostic, permanent=False, context=context, delayed=True))
        elif action.startswith(SUCCESS_ACTIONS) or (not action and status.startswith("2")):
            delivered.append(address)
        else:
            failed.append(_recipient(address, status, diagnostic, context=context))
    if failed:
        return BOUNCE, _unique(failed)
    if delayed:
        return DELAYED, _unique(delayed)
    if delivered:
        return DELIVERED, []
    return "", []


def _unique(recipients):
    seen, kept = set(), []
    for recipient in recipients:
        if recipient.address not in seen:
            seen.add(recipient.address)
            kept.append(recipient)
    return kept


def flufl_failures(msg):
    """(temporary, permanent) addresses flufl.bounce's detectors find; a detector choking
    on odd mail finds nothing."""
    try:
        from flufl.bounce import all_failures
        temporary, permanent = all_failures(msg)
    except Exception:
        return [], []

    def text(addresses):
        out = []
        for a in addresses:
            a = a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
            found = ADDRESS_RE.search(a)
            if found:
                out.append(found.group(0).lower())
        return sorted(set(out))
    return text(temporary), text(permanent)


def _addresses_in_text(text, own):
    """The failed addresses a text report names before the returned message: all those
    that open a line ("<a@x.example>: 550 ...", "  a@x.example", as Postfix, qmail, Exim
    and OpenSMTPD write them), else the first one named anywhere; never `own`, unless a
    qmail-style "<a@x.example>:" line names nothing but the sender itself (a mail to oneself)."""
    words = _before_returned(text)
    for found, keep in ((FAILED_LINE_RE.findall(words), None), (ADDRESS_RE.findall(words), 1)):
        addresses = list(dict.fromkeys(a.lower().strip(".") for a in found))
        addresses = [a for a in addresses if a not in own]
        if addresses:
            return addresses[:keep]
    return list(dict.fromkeys(a.lower() for a in OWN_FAILED_LINE_RE.findall(words)))[:1]


def _from_text(msg, text, own):
    """(kind, recipients) of a report without delivery-status fields."""
    ids = {found.lower() for found in MESSAGE_ID_ADDR_RE.findall(text)}     # flufl reads some as addresses
    temporary, permanent = ([a for a in found if a not in own and a not in ids] for found in flufl_failures(msg))
    delayed_text = RULES.any("delay_text", text)
    addresses = permanent or temporary
    if not addresses:
        addresses = _addresses_in_text(text, own)
    if delayed_text and not permanent:
        return DELAYED, [_recipient(a, "", _window(text, a, addresses) or text[:WINDOW], permanent=False,
                                    delayed=True) for a in addresses]
    if RULES.any("success_text", text) and not permanent and not temporary:
        return DELIVERED, []
    return BOUNCE, [_recipient(a, "", _window(text, a, addresses) or _own_words(text),
                               context=_window(text, a, addresses)) for a in addresses]


def _before_returned(text):
    """A text report up to the message it returns."""
    cut = RETURNED_RE.search(text)
    return text[:cut.start()] if cut else text


def _own_words(text):
    """What a report says about a failure when it never names the address."""
    return _before_returned(text)[:FALLBACK_TEXT]


def read_report(parsed, feedback=False):
    """The `Report` of a delivery report `parsed` (caller knows it is one), or of an
    ARF abuse report when `feedback`."""
    msg = parsed.msg
    if feedback:
        return Report(FEEDBACK, _feedback_recipients(msg), original_message_id(msg))
    text = report_text(msg)
    # the report's own sender, and whom it goes to (the sender of the mail that bounced)
    own = {(parsed.from_addr or "").lower()} | {a.lower() for a in parsed.to + parsed.reply_to}
    blocks = _dsn_blocks(msg) or _unsplit_dsn_blocks(text)
    kind, recipients = _from_dsn(blocks, text) if blocks else ("", [])
    if not kind:
        kind, recipients = _from_text(msg, text, own)
    return Report(kind, recipients, original_message_id(msg))


def _feedback_recipients(msg):
    """The address an abuse report is about: the returned message's To (or the report's
    Original-Rcpt-To)."""
    for kind, part in _walk(msg):
        if kind == "message/feedback-report":
            blocks = [b for b in _children(part) if hasattr(b, "items")] or _parse_fields(_text_of(part))
            for block in blocks:
                address = _address_of(_field(block, "original-rcpt-to"))
                if address:
                    return [Recipient(address=address, reason=FEEDBACK)]
        if kind in ("message/rfc822", "text/rfc822-headers"):
            inner = _children(part)
            value = str(inner[0].get("to") or "") if inner else ""
            if not value:
                found = re.search(r"^to:\s*(.+)$", _text_of(part), re.I | re.M)
                value = found.group(1) if found else ""
            addresses = [a.lower() for _, a in getaddresses([value]) if "@" in a]
            if addresses:
                return [Recipient(address=a, reason=FEEDBACK) for a in addresses]
    return []
