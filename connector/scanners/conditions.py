"""A rule's conditions: a tree of `any` (OR) and `all` (AND) groups over leaves
`{field, op, value}`, parsed once from YAML and evaluated per message.

Fields: from, to, cc, subject, body, header:<Name>, has_attachment, size.
Operators: contains, not_contains, equals, starts_with, ends_with, matches,
not_matches (case-insensitive unless `case_sensitive: true` on the leaf or
the rule); `size` also takes greater_than and less_than.

Address fields (from, to, cc) are a list of candidates, each address and the
whole decoded header ("Ann Lee <ann@acme.example>"): a positive operator
holds when any candidate satisfies it; `not_contains` and `not_matches` hold
when no candidate satisfies the positive form. A header that appears several
times is treated the same way.
"""

import re
from dataclasses import dataclass

from connector.mail.parse import parse_message
from connector.mail.headers import Headers
from connector.settings.values import parse_bool, parse_size

STRING_OPS = ("contains", "not_contains", "equals", "starts_with", "ends_with", "matches", "not_matches")
SIZE_OPS = ("equals", "greater_than", "less_than")
FIELDS = ("from", "to", "cc", "subject", "body", "has_attachment", "size")
HEADER_PREFIX = "header:"
HEADER_NAME_RE = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable ASCII, no space, no colon
LEAF_KEYS = {"field", "op", "value", "case_sensitive"}


class ConditionError(Exception):
    """A problem in one condition: `where` is the path below `conditions`."""

    def __init__(self, where, problem, hint):
        super().__init__(problem)
        self.where, self.problem, self.hint = where, problem, hint


@dataclass(frozen=True)
class Leaf:
    field: str
    op: str
    value: object          # str, bool (has_attachment) or int (size)
    case_sensitive: bool
    pattern: object = None  # compiled regex for matches / not_matches

    def test(self, message):
        if self.field == "has_attachment":
            return message.has_attachment == self.value
        if self.field == "size":
            size = message.size
            return {"equals": size == self.value, "greater_than": size > self.value,
                    "less_than": size < self.value}[self.op]
        values = message.values(self.field)
        if self.op in ("not_contains", "not_matches"):
            positive = "contains" if self.op == "not_contains" else "matches"
            return not any(self._positive(positive, v) for v in values)
        return any(self._positive(self.op, v) for v in values)

    def _positive(self, op, text):
        text = text or ""
        if op == "matches":
            return self.pattern.search(text) is not None
        value = self.value
        if not self.case_sensitive:
            text, value = text.casefold(), value.casefold()
        if op == "contains":
            return value in text
        if op == "equals":
            return text.strip() == value.strip()
        if op == "starts_with":
            return text.startswith(value)
        return text.endswith(value)  # ends_with

    def describe(self):
        return f"{self.field} {self.op} {self.value!r}"


@dataclass(frozen=True)
class Group:
    mode: str              # any | all
    children: tuple

    def test(self, message):
        results = (child.test(message) for child in self.children)
        return any(results) if self.mode == "any" else all(results)

    def describe(self):
        inner = f" {'or' if self.mode == 'any' else 'and'} ".join(c.describe() for c in self.children)
        return f"({inner})"


class MatchAll:
    """A rule without conditions: every message."""

    def test(self, message):
        return True

    def describe(self):
        return "(every message)"


def parse_conditions(node, case_sensitive=False, where="conditions"):
    """The tree for a rule's `conditions` (a list at the top means `all`)."""
    if node is None:
        return MatchAll()
    if isinstance(node, list):
        node = {"all": node}
    if not isinstance(node, dict):
        raise ConditionError(where, "must be a mapping: any, all, or field/op/value",
                             "write {field: subject, op: contains, value: invoice} or any: [...]")
    groups = set(node) & {"any", "all"}
    if groups:
        if len(node) != 1:
            raise ConditionError(where, f"mixes {', '.join(sorted(node))}",
                                 "a group is a mapping with the single key any or all")
        mode = groups.pop()
        items = node[mode]
        if not isinstance(items, list) or not items:
            raise ConditionError(f"{where}.{mode}", "must be a non-empty list", f"write {mode}: [ ... ]")
        return Group(mode, tuple(parse_conditions(item, case_sensitive, f"{where}.{mode}[{i}]")
                                 for i, item in enumerate(items)))
    return _leaf(node, case_sensitive, where)


def _leaf(node, case_sensitive, where):
    unknown = set(node) - LEAF_KEYS
    if unknown:
        raise ConditionError(f"{where}.{sorted(unknown)[0]}", "unknown key",
                             "a condition takes field, op, value (and case_sensitive); groups are any/all")
    field = node.get("field")
    if not isinstance(field, str) or not _known_field(field):
        raise ConditionError(f"{where}.field", f"unknown field {field!r}",
                             f"use one of: {', '.join(FIELDS)}, header:<Name> (a header name has no spaces)")
    if field.startswith(HEADER_PREFIX):
        field = HEADER_PREFIX + field[len(HEADER_PREFIX):].strip()
    op = node.get("op")
    ops = SIZE_OPS if field == "size" else ("equals",) if field == "has_attachment" else STRING_OPS
    if op not in ops:
        raise ConditionError(f"{where}.op", f"unknown operator {op!r} for field {field}",
                             f"use one of: {', '.join(ops)}")
    sensitive = node.get("case_sensitive", case_sensitive)
    if not isinstance(sensitive, bool):
        raise ConditionError(f"{where}.case_sensitive", f"{sensitive!r} is not true or false", "write true or false")
    if "value" not in node:
        raise ConditionError(f"{where}.value", "is missing", "give the value to compare with")
    value = node["value"]
    if field == "has_attachment":
        if isinstance(value, str) and parse_bool(value) is not None:
            value = parse_bool(value)  # "true" quoted is still true
        if not isinstance(value, bool):
            raise ConditionError(f"{where}.value", f"{value!r} is not true or false",
                                 "has_attachment compares with true or false")
        return Leaf(field, op, value, sensitive)
    if field == "size":
        size = parse_size(value) if not isinstance(value, bool) else None
        if size is None:
            raise ConditionError(f"{where}.value", f"{value!r} is not a size in bytes",
                                 "write a number of bytes, or 100k, 5M")
        return Leaf(field, op, size, sensitive)
    if isinstance(value, (bool, dict, list)) or value is None:
        raise ConditionError(f"{where}.value", f"{value!r} is not text", "quote the value: value: \"...\"")
    value = str(value)
    pattern = None
    if op in ("matches", "not_matches"):
        try:
            pattern = re.compile(value, 0 if sensitive else re.I)
        except re.error as exc:
            raise ConditionError(f"{where}.value", f"is not a valid regular expression: {exc}",
                                 "check brackets and escape special characters with \\") from None
    return Leaf(field, op, value, sensitive, pattern)


def _known_field(field):
    if field.startswith(HEADER_PREFIX):
        return bool(HEADER_NAME_RE.fullmatch(field[len(HEADER_PREFIX):].strip()))
    return field in FIELDS


class MessageFields:
    """What conditions read from one message, computed on first use: the headers alone
    (`Headers`) unless a rule reads the body or the attachments, or `parsed` is given."""

    def __init__(self, raw, parsed=None):
        self.raw = raw
        self._parsed = parsed
        self._head = parsed

    @property
    def size(self):
        # the size on the wire, as IMAP's RFC822.SIZE counts it: lines end in CRLF, so a
        # .eml saved with bare LF (`scanners test`) measures what the scan would see
        raw = self.raw
        return len(raw) + raw.count(b"\n") - raw.count(b"\r\n")

    @property
    def parsed(self):
        """The whole message (`parse_message`)."""
        if self._parsed is None:
            self._parsed = parse_message(self.raw)
        return self._parsed

    @property
    def head(self):
        """Subject, addresses and headers: the whole parse when there is one, else `Headers`."""
        if self._head is None:
            self._head = Headers(self.raw)
        return self._head

    @property
    def has_attachment(self):
        # a file the sender attached; not an image embedded in the HTML (a signature logo
        # referenced by Content-ID), even when the mailer gives it a file name
        return any((a.name or not a.inline) and not a.embedded for a in self.parsed.attachments)

    def values(self, field):
        if field == "body":
            return [self.parsed.text or ""]
        head = self.head
        if field == "subject":
            return [head.subject or ""]
        if field == "from":
            return [head.from_addr or "", head.header("From")]
        if field in ("to", "cc"):
            return list(getattr(head, field)) + [head.header(field)]
        values = head.header_all(field[len(HEADER_PREFIX):])
        return values or [""]
