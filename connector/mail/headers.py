"""The header fields of a message without parsing its body: `Headers`.

The IMAP scanners' rules (`connector.scanners.conditions`) read them: a scan
decides every message it fetches, and most rules read only the subject, the
addresses and other headers; the whole parse
(`connector.mail.parse.parse_message`: MIME tree, body text, attachments)
costs several times more than the headers and set the pace of a first scan.
`Headers` gives the same values as `parse_message` for the same bytes (same
repair of the header block, same charset hint for raw 8-bit headers, same
decoding; tests/test_scanner_rules.py compares both on the whole corpus),
computed on first use. The body and attachments still need the whole parse
(`connector.scanners.conditions.MessageFields` does it when a rule asks for them).
"""

import re
from email import policy
from email.parser import BytesParser
from functools import cached_property

from connector.mail.decode import decode_header
from connector.mail.parse import _addresses, _charset_hint, _repair_header_block

# The parser ends the header block at the first empty line, so the bytes up to the first
# "\n\n" (or "\n\r\n") always hold every header it would read from the whole message.
HEADER_END_RE = re.compile(rb"\n\r?\n")
# email.feedparser's header line (its headerRE, less the cases it reports as defects)
NAME_LINE_RE = re.compile(r"[\041-\071\073-\176]+:")


def header_items(head):
    """[(name, raw value)] of a header block, as email.parser reads it; None unless every line
    up to the empty one is a header or its continuation (the parser's repairs are left to it)."""
    items, value = [], None
    for line in head.decode("ascii", "surrogateescape").splitlines(True):  # the parser's line split
        if line[0] in " \t":
            if value is None:
                return None
            value.append(line)
        elif NAME_LINE_RE.match(line):
            name, _, first = line.partition(":")
            value = [first.lstrip(" \t")]
            items.append((name, value))
        elif line[0] in "\r\n":
            return [(name, "".join(value).rstrip("\r\n")) for name, value in items]
        else:
            return None
    return None


class Headers:
    """The header part of a `ParsedMessage`: subject, from_addr, to, cc, header(), header_all()."""

    def __init__(self, raw):
        raw = self.source = _repair_header_block(bytes(raw), [])
        end = HEADER_END_RE.search(raw)
        head = raw[:end.end()] if end else raw
        items = header_items(head)
        if items is None:
            try:
                items = BytesParser(policy=policy.compat32).parsebytes(head, headersonly=True).raw_items()
            except Exception:  # parse_message keeps no header it cannot parse either
                items = ()
        self.raw = {}
        for name, value in items:
            self.raw.setdefault(name.lower(), []).append(value)
        self._fields = {}

    @cached_property
    def hint(self):
        """The charset raw 8-bit header bytes are read in (looked for only when there are some)."""
        return _charset_hint(self.source)

    def _hint(self, values):
        return None if all(value.isascii() for value in values) else self.hint

    def _raw(self, name):
        """Every raw value of a header, in order (name lower case)."""
        return self.raw.get(name, [])

    def _addresses(self, name):
        found = self._fields.get(name)
        if found is None:
            found = self._fields[name] = _addresses(self.raw, name, self._hint(self._raw(name)), [])
        return found

    @property
    def subject(self):
        values = self._raw("subject")
        return decode_header(values[0], self._hint(values[:1]), []) if values else ""

    @property
    def from_addr(self):
        senders = self._addresses("from") or self._addresses("sender")
        senders = [pair for pair in senders if "@" in pair[1]] or senders
        return senders[0][1] if senders else ""

    @property
    def to(self):
        return [address for _, address in self._addresses("to")]

    @property
    def cc(self):
        return [address for _, address in self._addresses("cc")]

    def header(self, name):
        values = self._raw(name.lower())
        return decode_header(values[0]) if values else ""

    def header_all(self, name):
        return [decode_header(value) for value in self._raw(name.lower())]
