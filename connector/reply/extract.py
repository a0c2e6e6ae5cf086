"""The reply engine: apply a `RuleSet` to a body and keep the new text only.

Order of work on a body (docs/reply-extraction.md states the policy):

1. a `reply_above` marker cuts itself and everything below it;
2. the body is read top-down in segments: the earliest `header` or quoted
   line ends the current segment. After a header, a run of quoted lines is
   history; text written below that run (bottom posting, inline answers) is
   read as a new segment. A header followed by unquoted text ends the reply.
   A `forward` header that comes first keeps the forwarded mail whole;
3. in each segment a `signature` (or device footer) cuts the rest of the mail;
4. separator lines left at the end of a segment ("-----", "____") go;
5. when nothing is left (the mail is only a quote), the whole text is kept.
"""

import re

from connector.reply.rules import load_rules

SEPARATOR_RE = re.compile(r"[-_=*~\u2014\u2013]{2,}")
LEADING_BLANK_RE = re.compile(r"\A(?:[ \t]*\n)+")
BLANK_TAIL_RE = re.compile(r"[^\n]*(?:\n[ \t]*(?=\n))*\n?")   # rest of a line plus blank lines


class _Alternation:
    """The rules of one kind searched as one alternation, with a group per rule (`lastgroup`).

    Rules anchored at a line start are compiled together behind one more `^`,
    so `re` rejects every position inside a line at once instead of trying
    each rule there (a 4 KiB body of long lines took 2 ms through the quote
    header rules as one plain alternation, 0.1 ms so). The other rules form a
    second alternation. The leftmost match of the two wins, a tie goes to the
    earlier rule: the same answer one alternation of all rules would give.
    """

    def __init__(self, names):
        self._names = names
        self._variants = {}
        self._memo = None  # (text, [(searched from, match or None) per part]): see `search`
        self._conditional = [(k, r.requires) for k, r in names.items() if r.requires]
        anchored = {k: r for k, r in names.items() if r.pattern.startswith("^")}
        others = {k: r for k, r in names.items() if k not in anchored}
        self._order = {key: index for index, key in enumerate(names)}
        self._parts = [re.compile(prefix + "|".join(f"(?P<{k}>{r.pattern})" for k, r in part.items())
                                  + suffix, re.M)
                       for part, prefix, suffix in ((anchored, "^(?:", ")"), (others, "(?:", ")")) if part]

    def search(self, text, pos=0, endpos=None):
        """The leftmost match at or after `pos` (a tie goes to the earlier rule).

        Whether a rule matches at a position does not depend on where the search
        started, so a part's earlier answer for the same text still holds for a
        later `pos` up to the match it found (and forever when it found none):
        the engine walks a body forward, and each part scans it once instead of
        once per quote block (1,000 "On … wrote:" blocks took 2.4 s, rescanning).
        """
        best = None
        memo = self._memo if self._memo is not None and self._memo[0] is text and endpos is None else None
        if memo is None and endpos is None:
            memo = self._memo = (text, [None] * len(self._parts))
        for index, part in enumerate(self._parts):
            if memo is not None and memo[1][index] is not None and memo[1][index][0] <= pos:
                _, found = memo[1][index]
                if found is not None and found.start() < pos:
                    found = part.search(text, pos)
                    memo[1][index] = (pos, found)
            else:
                found = part.search(text, pos) if endpos is None else part.search(text, pos, endpos)
                if memo is not None:
                    memo[1][index] = (pos, found)
            if found is not None and (best is None or (found.start(), self._order[found.lastgroup])
                                      < (best.start(), self._order[best.lastgroup])):
                best = found
        return best

    def for_text(self, lowered):
        """This alternation without the rules whose `requires` words `lowered` lacks (cached)."""
        if not self._conditional:
            return self
        keys = ()
        for key, words in self._conditional:   # plain loops: this runs on every body
            for word in words:
                if word in lowered:
                    keys += (key,)
                    break
        variant = self._variants.get(keys)
        if variant is None:
            active = {k: r for k, r in self._names.items() if not r.requires or k in keys}
            variant = self if len(active) == len(self._names) else _Alternation(active) if active else _NEVER
            self._variants[keys] = variant
        return variant

    def match(self, text, pos=0):
        found = [m for m in (part.match(text, pos) for part in self._parts) if m is not None]
        return min(found, key=lambda m: self._order[m.lastgroup]) if found else None


class _Never:
    """An alternation none of whose rules can apply to this text."""

    def search(self, text, pos=0, endpos=None):
        return None

    def match(self, text, pos=0):
        return None

    def for_text(self, lowered):
        return self


_NEVER = _Never()


def _combine(rules):
    """One searchable alternation for a kind of rules, and the rule behind each group name."""
    if not rules:
        return None, {}
    names = {f"r{i}": rule for i, rule in enumerate(rules)}
    return _Alternation(names), names


class Extractor:
    """Applies one rule set. `version` names it; it is stored with every message."""

    def __init__(self, ruleset):
        self.ruleset = ruleset
        self.version = ruleset.version
        self._above, _ = _combine(ruleset.of_kind("reply_above"))
        self._header, self._header_rules = _combine(ruleset.of_kind("header") + ruleset.of_kind("forward"))
        self._signature, _ = _combine(ruleset.of_kind("signature"))
        quotes = ruleset.of_kind("quote")
        self._quote, _ = _combine(quotes)
        if quotes:
            alternatives = "|".join(f"(?:{rule.pattern})" for rule in quotes)
            self._quote_run = re.compile(rf"(?:(?:{alternatives})[^\n]*(?:\n|\Z)|[ \t]*\n)+", re.M)
        else:
            self._quote_run = None

    # -- public ---------------------------------------------------------------

    def extract(self, text):
        """The new text of a reply body (str in, str out; never raises on odd text)."""
        if not text:
            return ""
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        body = text
        lowered = text.lower()
        self._header_now = self._header.for_text(lowered) if self._header is not None else None
        self._signature_now = self._signature.for_text(lowered) if self._signature is not None else None
        if self._above is not None:
            marker = self._above.for_text(lowered).search(body)
            if marker:
                body = body[:marker.start()]
        reply = self._reply(body)
        if reply:
            return reply
        return text.strip()

    def extract_message(self, parsed):
        """The reply text of a `ParsedMessage`, using the HTML quote structure for HTML-only mail."""
        html = getattr(parsed, "html", "") or ""
        if html and getattr(parsed, "text_from_html", False) and not self._forwarded(parsed.text or ""):
            from connector.mail.html import html_to_text
            try:
                unquoted = html_to_text(html, drop_quotes=True)
            except Exception:  # a converter bug must not lose the message text
                unquoted = ""
            reply = self.extract(unquoted) if unquoted.strip() else ""
            return reply or self.extract(parsed.text or "")
        return self.extract(parsed.text or "")

    def _forwarded(self, text):
        """Whether `text` is a forward (its first quote header is a `forward` one). Clients put a
        forwarded mail inside their quote markup (Gmail's gmail_quote, Apple's blockquote), so
        the HTML structure would drop what the policy keeps: read the converted text instead."""
        if self._header is None or not text:
            return False
        found = self._header.for_text(text.lower()).search(text)
        if found is None or self._header_rules[found.lastgroup].kind != "forward":
            return False
        quote = self._quote.search(text, 0, found.start()) if self._quote is not None else None
        return quote is None

    # -- engine ---------------------------------------------------------------

    def _cut_signature(self, segment):
        """(segment without signature, whether one was cut)."""
        if self._signature_now is None:
            return segment, False
        cut = False
        while True:
            found = self._signature_now.search(segment)
            if not found:
                return segment, cut
            segment, cut = segment[:found.start()], True

    def _is_quoted(self, text, pos):
        return self._quote is not None and self._quote.match(text, pos) is not None

    def _block_end(self, text, pos):
        """End of the run of quoted (and blank) lines starting at `pos`.

        An unquoted line squeezed between two quoted lines is a wrapped quoted
        line (long links, clients that wrap after quoting) and stays in the run.
        """
        length = len(text)
        while True:
            run = self._quote_run.match(text, pos)
            end = run.end() if run else pos
            if end >= length or end == pos:
                return end
            line_end = text.find("\n", end)
            if line_end < 0:
                return end
            last_line = text[text.rfind("\n", 0, end - 1) + 1:end]
            if (last_line.strip() and self._is_quoted(text, line_end + 1)
                    and _looks_wrapped(last_line, text[end:line_end])):
                pos = line_end + 1
                continue
            return end

    def _reply(self, text):
        pieces = []
        start = pos = 0
        length = len(text)
        header_re, quote_re = self._header_now, self._quote
        header = quote = None
        while pos <= length:
            # a match found earlier still holds while it lies ahead: no rescan per quote block
            if header_re is not None and (header is None or header.start() < pos):
                header = header_re.search(text, pos)
                if header is None:
                    header_re = None
            if quote_re is not None and (quote is None or quote.start() < pos):
                quote = quote_re.search(text, pos)
                if quote is None:
                    quote_re = None
            if header is not None and (quote is None or header.start() <= quote.start()):
                head = text[start:header.start()]
                if self._header_rules[header.lastgroup].kind == "forward":
                    head, _ = self._cut_signature(head)
                    pieces.append(head.rstrip() + "\n\n" + text[header.start():] if head.strip()
                                  else text[header.start():])
                    break
                nxt = BLANK_TAIL_RE.match(text, header.end()).end()
                head, signed = self._cut_signature(head)
                pieces.append(head)
                if signed or nxt >= length or not self._is_quoted(text, nxt):
                    break
                start = pos = self._block_end(text, nxt)
                continue
            if quote is None:
                head, _ = self._cut_signature(text[start:])
                pieces.append(head)
                break
            qstart = quote.start()
            end = self._block_end(text, qstart)
            if (end < length and not pieces and text[start:qstart].strip()
                    and not self._several_quoted(text, qstart, end) and _hugs_text(text, qstart, end)):
                # before any quote, a lone '>' line right between text lines is text
                # ("> 5 items", ">>> link <<<"); after one, it is a quote answered inline
                pos = end
                continue
            head, signed = self._cut_signature(text[start:qstart])
            pieces.append(head)
            if signed:
                break
            start = pos = end
        return _join(pieces)

    def _several_quoted(self, text, qstart, end):
        first_end = text.find("\n", qstart)
        if first_end < 0 or first_end >= end:
            return False
        return self._quote.search(text, first_end + 1, end) is not None


WRAP_MIN = 40   # a quoted line shorter than this was not wrapped by the quoting client


def _looks_wrapped(quoted, line):
    """Whether unquoted `line`, squeezed between quoted lines below `quoted`, is the wrapped
    rest of a quoted line: the quoted line above was long, empty or holds a link, or `line` is
    a link, indented, or one long unbreakable token (a path). Text right below a short quoted
    sentence is an inline answer ("> Can you restart it?" / "Done.")."""
    return (len(quoted.rstrip()) >= WRAP_MIN or not quoted.strip(" \t>") or "://" in quoted
            or "://" in line or line[:1] in " \t("
            or (len(line.split()) == 1 and len(line.strip()) >= WRAP_MIN // 2))


def _hugs_text(text, qstart, end):
    """Whether the lone quoted line at `qstart` sits right between text lines (no blank line
    above or below it): then it is text ("> 5 items", ">>> link <<<"); set apart by blank
    lines it is a quote answered below (inline replies)."""
    above = text[text.rfind("\n", 0, max(qstart - 1, 0)) + 1:qstart]
    below_blank = text.count("\n", qstart, end) > 1
    return bool(above.strip()) and not below_blank


def _trim(piece):
    """`piece` without trailing blank and separator lines ('-----', '____', '===')."""
    piece = piece.rstrip()
    while piece:
        cut = piece.rfind("\n") + 1
        if not SEPARATOR_RE.fullmatch(piece[cut:].strip()):
            break
        piece = piece[:cut].rstrip()
    return piece


def _join(pieces):
    out, gap = "", 0
    for piece in pieces:
        trimmed = _trim(piece)
        if not trimmed.strip():
            continue
        if out:
            out += "\n" * max(1, min(gap, 2)) + LEADING_BLANK_RE.sub("", trimmed)
        else:
            out = trimmed
        gap = piece[len(trimmed):].count("\n") if piece.startswith(trimmed) else 2
    return out.strip()


_SHIPPED = None


def shipped_extractor():
    global _SHIPPED
    if _SHIPPED is None:
        _SHIPPED = Extractor(load_rules([]))
    return _SHIPPED


def extract_reply(text):
    """The new text of `text` with the shipped rules (see `load_extractor` for local overrides)."""
    return shipped_extractor().extract(text)
