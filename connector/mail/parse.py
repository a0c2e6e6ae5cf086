"""Parse raw bytes into what the pipeline reads: decoded headers, body text, attachments.

Step 1 of the pipeline (`connector.pipeline.parse`). Never raises on bad
input: what had to be worked around is listed in `ParsedMessage.defects`.

Headers are decoded from their raw bytes (`connector.mail.decode`): raw 8-bit
text, wrong or unknown charsets and sloppy encoded words are the norm in real
mail. The body is chosen the way a person reads the mail: text/plain when it
is real, the HTML (converted by `connector.mail.html`) when it is the only or
the richer part; several inline text parts of a multipart/mixed are joined.
Attachments are every other leaf part, at any depth.

What a stranger's mail costs stays linear and small (issue 9): the work per
message is capped by the named limits below (nesting depth, leaf parts
read, headers per part, References kept); the parse notes in
`ParsedMessage.capped` which limits a message reached, and the raw bytes
are never touched (the spool keeps them whole). A parser failure still
yields From, Subject and the other headers (a headers-only parse).
"""

import bisect
import binascii
import re
from dataclasses import dataclass, field
from email import policy
from email.feedparser import FeedParser
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from connector.mail.decode import (
    CONTROLS_RE, FOLD_RE, SPACE_CONTROLS_RE, clean_text, decode_bytes, decode_header, decode_words, header_bytes_text,
    header_params)
from connector.mail.html import html_to_text

# Work caps per message (issue 9). Real mail stays far below each of them.
MAX_DEPTH = 30             # nesting of multipart and message/* parts; deeper ones are one opaque part
MAX_PARTS = 500            # leaf parts read (body pieces and attachments); later ones are not looked at
MAX_HEADERS = 1000         # header fields kept per part; later ones are not looked at
MAX_REFERENCES = 100       # References kept: the first (the thread's root) and the last 99
MAX_MESSAGE_ID = 998       # longest Message-ID read (the line length limit of RFC 5322)

MSGID_RE = re.compile(r"<[^<>\s]{1,%d}>" % MAX_MESSAGE_ID)
CHARSET_RE = re.compile(rb"charset\s*=\s*\"?([-\w.:]+)", re.I)
SINGLE_MAILBOX_RE = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<>",]*?))\s*<\s*([^<>\s]*)\s*>\s*$')
HEADER_LINE_RE = re.compile(rb"^[!-9;-~]+:", re.M)
OBS_HEADER_RE = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)
UU_BEGIN_RE = re.compile(r"begin [0-7]{3,4} ([^\r\n]+)\r?")
SIGNATURE_TYPES = ("application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature")


class _CachedHeaderRegistry(HeaderRegistry):
    """policy.default's header parsing, memoised: the parser and the body walk ask for
    Content-Type several times per part, and its parse dominates the cost of plain mail.
    Header objects are immutable, so sharing them is safe."""

    def __init__(self, size=2048):
        super().__init__()
        self._cache, self._size = {}, size

    def __call__(self, name, value):
        key = (name.lower(), value)
        header = self._cache.get(key)
        if header is None:
            header = super().__call__(name, value)
            if len(self._cache) >= self._size:
                self._cache.clear()
            self._cache[key] = header
        return header


POLICY = policy.default.clone(header_factory=_CachedHeaderRegistry())


class _Unfolded(policy.Compat32):
    """The legacy policy, which the parser reads first: its header values are plain
    strings, where policy.default parses every Content-Type into objects (20,000
    parts with distinct names took 18 s). Values are unfolded as policy.default
    does, so a boundary folded over two lines still matches."""

    def header_fetch_parse(self, name, value):
        """Always text: compat32 gives raw 8-bit values as Header objects, which the
        bounce detectors cannot read."""
        return header_bytes_text(FOLD_RE.sub("", value))


LEGACY = _Unfolded()


class _BoundedParser(FeedParser):
    """The stdlib parser with the depth and header caps: a multipart or message/* part
    nested deeper than MAX_DEPTH is read as one application/octet-stream part (the
    stdlib recurses once per level: 1,000 levels raised RecursionError), and header
    fields past MAX_HEADERS in one part are not stored."""

    def __init__(self, policy):
        super().__init__(policy=policy)
        self.capped = {}

    def _parse_headers(self, lines):
        starts = [i for i, line in enumerate(lines) if line[:1] not in (" ", "\t")]
        if len(starts) > MAX_HEADERS:
            self.capped["headers"] = max(self.capped.get("headers", 0), len(starts))
            lines = lines[:starts[MAX_HEADERS]]
        super()._parse_headers(lines)
        if len(self._msgstack) > MAX_DEPTH and self._cur.get_content_maintype() in ("multipart", "message"):
            self.capped["depth"] = MAX_DEPTH
            self._cur.replace_header("Content-Type", "application/octet-stream")


def _parse(raw, parse_policy, capped):
    """`raw` through the bounded parser (fed in chunks like `email.parser.Parser`).

    A mail of one part (no multipart or message/* type) is the header block through
    the parser and the rest of the text as its payload, which is what the parser
    makes of it line by line (a 4 KiB text mail: 50 us of 120)."""
    text = raw.decode("ascii", "surrogateescape")
    head_end = _single_part_head_end(text)
    if head_end is not None:
        msg, parser = _fed(text[:head_end], parse_policy)
        if msg.get_content_maintype() not in COMPOSITE:
            msg.set_payload(text[head_end:])
            capped.update(parser.capped)
            return msg
    msg, parser = _fed(text, parse_policy)
    capped.update(parser.capped)
    return msg


def _fed(text, parse_policy):
    parser = _BoundedParser(parse_policy)
    for start in range(0, len(text), 8192):
        parser.feed(text[start:start + 8192])
    return parser.close(), parser


COMPOSITE = ("multipart", "message")
MAYBE_COMPOSITE_RE = re.compile(r"multipart|message/", re.I)
PARSER_LINE_END_RE = re.compile(r"\r\n|\r|\n")       # how the stdlib parser splits lines
PARSER_HEADER_RE = re.compile(r"[!-9;-~]*:|[\t ]")    # a header line as it reads one ("From " aside)


def _single_part_head_end(text):
    """Where the body of a one-part mail starts: after the blank line ending a header block
    whose every line the parser reads as a header line and that names no composite type;
    None otherwise (the whole text goes through the parser)."""
    position = 0
    while True:
        end = PARSER_LINE_END_RE.search(text, position)
        if end is None:
            return None
        if end.start() == position:   # the blank line
            return end.end() if position and not MAYBE_COMPOSITE_RE.search(text, 0, position) else None
        if not PARSER_HEADER_RE.match(text, position) or text.startswith("From ", position):
            return None
        position = end.end()


@dataclass
class Attachment:
    name: str
    content_type: str
    size: int
    inline: bool = False
    embedded: bool = False   # an image of multipart/related shown in the HTML by Content-ID (a logo)


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
    html: str = ""                 # the chosen HTML part (when the mail has one), as text
    text_from_html: bool = False   # `text` was converted from `html` (no real text/plain)
    capped: dict = field(default_factory=dict)   # {limit reached: how many were seen}, e.g. {"parts": 20000}
    headers: dict = field(default_factory=dict, repr=False)   # {lower-case name: [raw values]}

    def header(self, name):
        """A header's decoded value ('' when absent)."""
        values = self.headers.get(name.lower())
        return decode_header(values[0]) if values else ""

    def header_all(self, name):
        """Every value of a header, decoded, in order."""
        return [decode_header(v) for v in self.headers.get(name.lower(), ())]

    def has_header(self, name):
        return name.lower() in self.headers


def _raw_items(msg):
    try:
        return msg.raw_items()
    except Exception:
        return iter(())


# -- headers ------------------------------------------------------------------

def _repair_header_block(raw, defects):
    """Obsolete 'Name :' header syntax (RFC 5322 4.5) as 'Name:', so the parser keeps the block."""
    if HEADER_LINE_RE.match(raw) or raw[:5] == b"From ":
        return raw
    end = raw.find(b"\n\n")
    end2 = raw.find(b"\r\n\r\n")
    end = min(e for e in (end, end2, len(raw)) if e >= 0)
    head = OBS_HEADER_RE.sub(rb"\1:", raw[:end])
    if head != raw[:end]:
        defects.append("header: obsolete 'Name :' syntax repaired")
    return head + raw[end:]


def _mailboxes(value, hint, defects):
    """[(name, address)] of an address header's raw value."""
    if not value:
        return []
    value = header_bytes_text(re.sub(r"\r?\n(?=[ \t])", "", value), hint, defects)
    single = SINGLE_MAILBOX_RE.match(value)
    if single:
        quoted, bare, address = single.groups()
        name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pairs = [(name, address)]
    else:
        try:
            pairs = getaddresses([value])
        except Exception as exc:
            defects.append(f"address: {exc}")
            pairs = []
    mailboxes = ((name, _bare_address(address)) for name, address in pairs)
    return [(clean_text(decode_words(name, defects)).strip(), address) for name, address in mailboxes if address]


def _bare_address(address):
    """An address as we store and write it: lower case, no space or control character.
    An encoded word is no address (a reader would show it decoded): decoded, it counts
    when it is one, else the mailbox has no usable address."""
    if "=?" in address:
        address = decode_words(address)
        if "=?" in address or "?=" in address:
            return ""
    address = SPACE_CONTROLS_RE.sub("", CONTROLS_RE.sub("", address)).strip().lower()
    return address.replace(" ", "")


def _addresses(msg_headers, name, hint, defects):
    found = []
    for value in msg_headers.get(name, ()):
        found.extend(_mailboxes(value, hint, defects))
    return found


# -- body and attachments -----------------------------------------------------

def _filename(part, defects):
    """The file name of a part: Content-Disposition filename, else Content-Type name (or file)."""
    disposition = content_type = None
    for key, value in _raw_items(part):
        key = key.lower()
        if key == "content-disposition" and disposition is None:
            disposition = value
        elif key == "content-type" and content_type is None:
            content_type = value
    for value, names in ((disposition, ("filename", "name")), (content_type, ("name", "file", "filename"))):
        if value and "=" in value:
            params = header_params(value, defects)
            for name in names:
                if params.get(name, "").strip():
                    return params[name].strip()
    return ""


def _payload(part, defects):
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        defects.append(f"payload: {exc}")
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data


def _part_text(part, defects):
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(_payload(part, defects), charset, defects)


def _content_type(part):
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _disposition(part):
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def _children(part, defects):
    try:
        payload = part.get_payload()
    except Exception as exc:
        defects.append(f"multipart: {exc}")
        return []
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


class _Walker:
    """Collects the body pieces and the attachments of one message."""

    def __init__(self, defects, capped):
        self.defects = defects
        self.capped = capped
        self.leaves = 0         # leaf parts seen, read or not (MAX_PARTS)
        self.pieces = []        # [(content_type, text)]
        self.attachments = []
        self.inline_texts = []  # (attachment index, text) of inline named text parts

    def walk(self, part, wants_body=True, depth=0, signed=False, related=False):
        if depth > MAX_DEPTH:
            self.defects.append("multipart: nested too deep")
            return
        ctype = _content_type(part)
        if ctype.startswith("message/") or ctype == "text/rfc822-headers":
            self._message_part(part, ctype, wants_body, depth)
            return
        if ctype.startswith("multipart/") and not part.is_multipart():
            self.defects.append(f"{ctype} without parts")   # no boundary found
            if depth == 0:
                self.pieces.append(("text/plain", _part_text(part, self.defects)))
            if depth == 0 or not wants_body:
                return       # else: kept below as an attachment, so nothing is lost
        if part.is_multipart():
            children = _children(part, self.defects)
            subtype = ctype.partition("/")[2]
            if subtype == "alternative":
                best = _pick_alternative(children)
                for child in children:
                    self.walk(child, wants_body and child is best, depth + 1)
            elif subtype == "related":
                for index, child in enumerate(children):
                    self.walk(child, wants_body and index == 0, depth + 1, related=index > 0)
            else:
                for index, child in enumerate(children):
                    self.walk(child, wants_body, depth + 1, signed=subtype == "signed" and index > 0)
            return
        if not self._counted():
            return
        name = _filename(part, self.defects)
        disposition = _disposition(part)
        if ctype in ("text/plain", "text/html") and not name and disposition != "attachment":
            if wants_body:
                self.pieces.append((ctype, _part_text(part, self.defects)))
            return
        if signed and not name and ctype in SIGNATURE_TYPES:
            return   # an unnamed signature of multipart/signed is not a file the sender attached
        data = _payload(part, self.defects)
        if ctype == "text/plain" and name and disposition == "inline" and wants_body:
            self.inline_texts.append((len(self.attachments), part))
        inline = disposition == "inline" or (disposition is None and _has(part, "content-id"))
        embedded = related and inline and ctype.startswith("image/") and _has(part, "content-id")
        self.attachments.append(Attachment(name, ctype, len(data), inline, embedded))

    def _message_part(self, part, ctype, wants_body, depth):
        inner = _children(part, self.defects) if ctype in ("message/rfc822", "message/global") else []
        if depth == 0 and inner:     # the whole mail is an encapsulated message: read that one
            self.walk(inner[0], wants_body, depth + 1)
            return
        if not self._counted():
            return
        name = _filename(part, self.defects)
        if not name and inner:
            name = (decode_header(_first_raw(inner[0], "subject")) or "message") + ".eml"
        try:
            size = len(part.as_bytes()) if inner else len(_payload(part, self.defects))
        except Exception:
            size = 0
        self.attachments.append(Attachment(name, ctype, size, _disposition(part) == "inline"))
        for message in inner:        # files inside a forwarded message are attachments too
            self.walk(message, False, depth + 1)

    def _counted(self):
        """Count one more leaf (or attached message); False past MAX_PARTS: not to be read."""
        self.leaves += 1
        if self.leaves > MAX_PARTS:
            self.capped["parts"] = self.leaves
            return False
        return True

    def promote_inline_text(self):
        """No body found: the first inline, named text part is the body (a text sent 'as inline file')."""
        if self.pieces or not self.inline_texts:
            return
        index, part = self.inline_texts[0]
        self.pieces.append(("text/plain", _part_text(part, self.defects)))
        del self.attachments[index]


def _first_raw(part, name):
    for key, value in _raw_items(part):
        if key.lower() == name:
            return value
    return ""


def _has(part, name):
    return any(key.lower() == name for key, _ in _raw_items(part))


def _pick_alternative(children):
    """The alternative a person would read: a non-empty text/plain, else the HTML (or richest) one."""
    plain = html = None
    for child in children:
        ctype = _content_type(child)
        if ctype == "text/plain" and plain is None and _disposition(child) != "attachment":
            plain = child
        elif ctype == "text/html" or (child.is_multipart() and html is None):
            html = child
    if plain is not None and (html is None or _part_text(plain, []).strip()):
        return plain
    if html is not None:
        return html
    return children[-1] if children else None


def _uu_size(name, lines, defects):
    """The decoded size of a uuencoded file's lines (a bad line counts for nothing)."""
    size, bad = 0, 0
    for line in lines:
        line = line.strip()
        if not line or line == "`":
            continue
        try:
            size += len(binascii.a2b_uu(line.encode("ascii", "replace")))
        except (binascii.Error, ValueError):
            bad += 1
    if bad:
        defects.append(f"uuencode: {bad} bad lines in {name!r}")
    return size


def _uudecode(text, attachments, defects):
    """Move uuencoded files (Outlook Express, old Unix mailers) out of a text body.

    One pass over the lines: a `begin` line opens a file only when an `end` line
    follows it somewhere (looked up in the list of `end` lines, so many `begin`
    lines without an `end` stay linear)."""
    lines = text.split("\n")
    ends = [i for i, line in enumerate(lines) if line[:3] == "end" and not line[3:].strip(" \t\r")]
    kept, i = [], 0
    while i < len(lines):
        begin = UU_BEGIN_RE.fullmatch(lines[i]) if lines[i][:6] == "begin " else None
        following = bisect.bisect_right(ends, i) if begin else len(ends)
        if following == len(ends):
            kept.append(lines[i])
            i += 1
            continue
        end, name = ends[following], begin.group(1).strip()
        attachments.append(Attachment(name, "application/octet-stream", _uu_size(name, lines[i + 1:end], defects)))
        i = end + 1
    return "\n".join(kept)


def _body(pieces):
    """(text, html, text_from_html) from the collected body pieces (text with LF line ends)."""
    pieces = [(ctype, text.replace("\r\n", "\n") if "\r" in text else text) for ctype, text in pieces]
    plain = [text for ctype, text in pieces if ctype == "text/plain" and text.strip()]
    htmls = [text for ctype, text in pieces if ctype == "text/html" and text.strip()]
    if plain and not htmls:
        return "\n\n".join(t.strip("\r\n") for t in plain) if len(plain) > 1 else plain[0], "", False
    parts, html_only = [], bool(htmls) and not plain
    for ctype, text in pieces:
        if not text.strip():
            continue
        parts.append(html_to_text(text) if ctype == "text/html" else text.strip("\r\n"))
    return "\n\n".join(parts), "\n".join(htmls), html_only


def parse_message(raw):
    """Parse `raw` (bytes) into a `ParsedMessage`; never raises on malformed mail."""
    defects, capped = [], {}
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = _repair_header_block(bytes(raw), defects)
    msg = _message(raw, defects, capped)
    defects.extend(type(d).__name__ for d in msg.defects)
    headers = {}
    for key, value in _raw_items(msg):
        headers.setdefault(key.lower(), []).append(value)
    hint = _charset_hint(raw)

    def text_header(name):
        values = headers.get(name)
        return decode_header(values[0], hint, defects) if values else ""

    senders = _addresses(headers, "from", hint, defects) or _addresses(headers, "sender", hint, defects)
    # Prefer a mailbox with a domain: an unquoted "Müller, Hans <hans@x>" reads as
    # two mailboxes, "müller" and "hans@x"; the sender is the second.
    senders = [pair for pair in senders if "@" in pair[1]] or senders
    from_name, from_addr = senders[0] if senders else ("", "")
    walker = _Walker(defects, capped)
    try:
        walker.walk(msg)
        walker.promote_inline_text()
    except Exception as exc:  # a part the walker cannot read: keep what it found
        defects.append(f"body: {type(exc).__name__}: {exc}")
    text, html, text_from_html = _body(walker.pieces)
    if "begin " in text:
        text = _uudecode(text, walker.attachments, defects)
    references = MSGID_RE.findall(text_header("references"))
    if len(references) > MAX_REFERENCES:
        capped["references"] = len(references)
        references = references[:1] + references[1 - MAX_REFERENCES:]
    if capped:
        defects.append("capped: " + ", ".join(f"{name} {count}" for name, count in capped.items()))
    return ParsedMessage(
        msg=msg,
        subject=text_header("subject"),
        from_addr=from_addr,
        from_name=from_name,
        to=[a for _, a in _addresses(headers, "to", hint, defects)],
        cc=[a for _, a in _addresses(headers, "cc", hint, defects)],
        reply_to=[a for _, a in _addresses(headers, "reply-to", hint, defects)],
        message_id=(MSGID_RE.findall(text_header("message-id")) or [""])[0],
        in_reply_to=MSGID_RE.findall(text_header("in-reply-to"))[-MAX_REFERENCES:],
        references=references,
        text=text,
        attachments=walker.attachments,
        defects=defects,
        html=html,
        text_from_html=text_from_html,
        capped=capped,
        headers=headers,
    )


def _message(raw, defects, capped):
    """The message tree of `raw`; never raises. When the parser fails (a header the
    default policy cannot decode, say), the legacy policy, then the headers alone."""
    for parse_policy in (LEGACY, POLICY):
        try:
            return _parse(raw, parse_policy, capped)
        except Exception as exc:
            defects.append(f"parse: {type(exc).__name__}: {exc}")
    try:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    except Exception as exc:
        defects.append(f"parse: headers: {type(exc).__name__}: {exc}")
        return EmailMessage()


def _charset_hint(raw):
    """The first charset the message declares: the likely charset of raw 8-bit headers."""
    lowered = raw[:65536].lower()   # found by bytes.find, not by a case-blind regex at every byte (30 us)
    position = lowered.find(b"charset")
    while position >= 0:
        found = CHARSET_RE.match(raw, position, 65536)
        if found:
            return found.group(1).decode("ascii", "replace")
        position = lowered.find(b"charset", position + 1)
    return None
