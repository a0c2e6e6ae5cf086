"""HTML mail to readable text, aware of how clients mark quoted history.

`html_to_text(html)` keeps paragraphs, line breaks, list items ("- ", "1. ")
and link targets ("text (https://...)"); scripts, styles and comments go.
With `drop_quotes=True` it also leaves out what clients mark as history:

- subtrees: `<blockquote>` (Apple Mail `type=cite`, Thunderbird, Gmail; not an
  indent without a quote bar, `style="...border:none"`),
  Gmail's `gmail_quote`, Thunderbird's `moz-cite-prefix` attribution, Yahoo's
  `yahoo_quoted`, ProtonMail's `protonmail_quote`, Zoho's `zmail_extra`;
- everything from an Outlook reply header onwards: `divRplyFwdMsg`,
  `appendonsend`, `OLK_SRC_BODY_SECTION`, `<hr id="stopSpelling">`, and the
  `border-top` separator div Outlook puts above its From:/Sent: block.

The markers are data: rules/html.yaml (each with samples), read at import.

Built on lxml's HTML parser (libxml2) as an event stream (a parser target,
no tree is built): linear in the size of the markup and tolerant of broken
markup. The stdlib `html.parser` it replaces is quadratic on unclosed tags
(60 KB of `<a ` took 74 s); on the 217 distinct HTML parts of the corpus and
the fixtures both give the same text for 208, the others differ in blank
lines, a byte-order mark, or text the old parser lost after an unclosed
`<head>`. See docs/reply-extraction.md for why not html2text or BeautifulSoup.

One pass gives both texts: the parse converts the mail's HTML, and the reply
extractor asks for the same HTML without quotes right after; the last
complete conversion is remembered (`_Last`), so the markup is parsed once.

Under a message's time budget (`connector.timebudget`) the markup is fed in
CHUNK-sized pieces and the deadline looked at between two: once it has
passed, the rest is only stripped of its tags, so the full text is kept.
"""

import html as html_lib
import re

from lxml import etree

from connector import timebudget
from connector.mail.rules import LazyRuleFile

BLOCK_TAGS = {"p", "div", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
              "blockquote", "section", "article", "header", "footer", "address", "center",
              "form", "fieldset", "dl", "dt", "dd", "hr"}
SKIP_TAGS = {"script", "style", "head", "title", "noscript", "template", "xml", "o:p"}
VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source",
             "embed", "param", "track"}
RULES = LazyRuleFile("html.yaml", ("quote_class", "stop_id", "stop_style", "indent_style"))
SPACE_RE = re.compile(r"[ \t\r\n\f\u200b]+")
BLANK_LINES_RE = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
TAG_RE = re.compile(r"<[^<>]*>")  # [^<>]: an unclosed tag costs up to the next '<', never to the end
CHUNK = 256 * 1024                 # characters fed to the parser between two looks at the deadline


class _TextWriter:
    """Text from parser events, with or without the quoted history."""

    def __init__(self, drop_quotes):
        self.drop_quotes = drop_quotes
        self.out = []
        self.skip_tag, self.skip_depth = None, 0      # subtree being left out
        self.stopped = False                          # the rest is quoted history
        self.pre = 0
        self.lists = []                               # ["ul"|number, ...]
        self.links = []                               # [(href, start index in out)]

    # -- helpers
    def _newline(self, count=1):
        if not self.out:
            return
        tail = "".join(self.out[-4:]).rstrip(" ")
        have = len(tail) - len(tail.rstrip("\n"))
        if count > have:
            self.out.append("\n" * (count - have))

    def _is_quote(self, tag, attrs):
        if RULES.any("quote_class", attrs.get("class")):
            return True
        if tag == "blockquote":
            # Gmail's and Outlook on the web's "indent" button writes a blockquote without the
            # quote bar (border:none): the sender's own indented text, not history
            return (attrs.get("type") or "").lower() == "cite" or not RULES.any("indent_style", attrs.get("style"))
        return False

    def _is_stop(self, tag, attrs):
        return RULES.any("stop_id", attrs.get("id")) or (tag == "div" and RULES.any("stop_style", attrs.get("style")))

    # -- parser callbacks
    def handle_starttag(self, tag, attrs):
        if self.stopped:
            return
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        attrs = {k: (v or "") for k, v in attrs}
        if tag in SKIP_TAGS:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if self.drop_quotes:
            if self._is_stop(tag, attrs):
                self.stopped = True
                return
            if self._is_quote(tag, attrs) and tag not in VOID_TAGS:
                self.skip_tag, self.skip_depth = tag, 1
                return
        if tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self._newline()
            kind = self.lists[-1] if self.lists else "ul"
            if isinstance(kind, int):
                self.lists[-1] += 1
                self.out.append(f"{kind}. ")
            else:
                self.out.append("- ")
        elif tag in ("ul", "ol"):
            self._newline()
            self.lists.append(1 if tag == "ol" else "ul")
        elif tag in BLOCK_TAGS:
            self._newline(2 if tag in ("p", "table", "blockquote", "pre") or tag[0] == "h" else 1)
            if tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            if self.out and not self.out[-1].endswith(("\n", " ")):
                self.out.append(" ")
        elif tag == "a":
            self.links.append((attrs.get("href", "").strip(), len(self.out)))
        elif tag == "img" and attrs.get("alt", "").strip() and not attrs.get("src", "").startswith("cid:"):
            self.out.append(f"[{attrs['alt'].strip()}]")

    def handle_endtag(self, tag):
        if self.stopped:
            return
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._newline()
        elif tag == "li":
            self._newline()
        elif tag in BLOCK_TAGS:
            if tag == "pre" and self.pre:
                self.pre -= 1
            self._newline(2 if tag in ("p", "table", "blockquote", "pre") or tag[0] == "h" else 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.out[start:]).strip()
            target = href[7:] if href.lower().startswith("mailto:") else href
            if (target and not href.startswith(("#", "javascript:", "cid:")) and label
                    and target.rstrip("/") not in label):
                self.out.append(f" ({href})")

    def handle_data(self, data):
        if self.stopped or self.skip_tag:
            return
        if not self.pre:
            data = SPACE_RE.sub(" ", data)
            if not data.strip():
                if self.out and not self.out[-1].endswith((" ", "\n")):
                    self.out.append(" ")
                return
            if self.out and self.out[-1].endswith(("\n", " ")):
                data = data.lstrip(" ")
        self.out.append(data)

    def text(self):
        lines = [line.rstrip() for line in "".join(self.out).split("\n")]
        return BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()


class _Target:
    """lxml parser target: hands each event to both writers, text runs joined (entities
    arrive as text events of their own; a lone `&nbsp;` must not read as blank)."""

    def __init__(self, writers):
        self.writers = writers
        self.pending = []

    def _flush(self):
        if self.pending:
            data = "".join(self.pending)
            self.pending = []
            for writer in self.writers:
                writer.handle_data(data)

    def start(self, tag, attrib):
        self._flush()
        attrs = list(attrib.items())
        for writer in self.writers:
            writer.handle_starttag(tag, attrs)

    def end(self, tag):
        self._flush()
        for writer in self.writers:
            writer.handle_endtag(tag)

    def data(self, text):
        self.pending.append(text)

    def comment(self, text):
        pass

    def close(self):
        self._flush()


def _strip_tags(html):
    """The text of `html` without parsing it: what is left when the budget ran out."""
    return BLANK_LINES_RE.sub("\n\n", html_lib.unescape(TAG_RE.sub(" ", html))).strip()


def _convert(html):
    """(text, text without quoted history, complete) of `html`, in one pass of the parser."""
    writers = (_TextWriter(False), _TextWriter(True))
    target = _Target(writers)
    parser = etree.HTMLParser(target=target, huge_tree=True, no_network=True)
    for start in range(0, len(html), CHUNK):
        if timebudget.expired():
            rest = _strip_tags(html[start:])
            return tuple("\n\n".join(filter(None, (w.text(), rest))) for w in writers) + (False,)
        try:
            parser.feed(html[start:start + CHUNK])
        except Exception:  # libxml2 recovers from broken markup, but never let markup stop a message
            break
    try:
        parser.close()
    except Exception:
        target.close()
    return writers[0].text(), writers[1].text(), True


class _Last:
    """The last complete conversion, so that the second text of the same HTML costs nothing.
    One tuple, replaced whole: IMAP scanner threads parse too, and must never pair one
    mail's HTML with another's text."""

    entry = (None, "", "")  # (html, text, text without quotes)


def html_to_text(html, drop_quotes=False):
    """Readable text of `html`; with `drop_quotes`, without the quoted history clients mark."""
    if not html:
        return ""
    entry = _Last.entry
    if html is not entry[0] and html != entry[0]:
        text, unquoted, complete = _convert(html)
        entry = (html, text, unquoted)
        if complete:
            _Last.entry = entry
    return entry[2 if drop_quotes else 1]
