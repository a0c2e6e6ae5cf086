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

Built on the stdlib `html.parser` (tolerant of broken markup, no dependency);
see docs/reply-extraction.md for why not html2text or BeautifulSoup.
"""

import re
from html.parser import HTMLParser

BLOCK_TAGS = {"p", "div", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
              "blockquote", "section", "article", "header", "footer", "address", "center",
              "form", "fieldset", "dl", "dt", "dd", "hr"}
SKIP_TAGS = {"script", "style", "head", "title", "noscript", "template", "xml", "o:p"}
VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source",
             "embed", "param", "track"}
QUOTE_CLASSES = ("gmail_quote", "moz-cite-prefix", "yahoo_quoted", "protonmail_quote", "zmail_extra",
                 "gmail_extra_quote")
STOP_IDS = ("divrplyfwdmsg", "appendonsend", "olk_src_body_section", "stopspelling", "x_divrplyfwdmsg",
            "mail-editor-reference-message-container")
BORDER_TOP_RE = re.compile(r"border-top:\s*solid", re.I)
BORDER_NONE_RE = re.compile(r"(?:^|;)\s*border\s*:\s*(?:none|0)\b", re.I)
SPACE_RE = re.compile(r"[ \t\r\n\f\u200b]+")
BLANK_LINES_RE = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


class _TextWriter(HTMLParser):
    def __init__(self, drop_quotes):
        super().__init__(convert_charrefs=True)
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
        classes = (attrs.get("class") or "").lower()
        if any(name in classes for name in QUOTE_CLASSES):
            return True
        if tag == "blockquote":
            # Gmail's and Outlook on the web's "indent" button writes a blockquote without the
            # quote bar (border:none): the sender's own indented text, not history
            return (attrs.get("type") or "").lower() == "cite" or not BORDER_NONE_RE.search(attrs.get("style") or "")
        return False

    def _is_stop(self, tag, attrs):
        ident = (attrs.get("id") or "").lower()
        if ident and any(ident.startswith(name) for name in STOP_IDS):
            return True
        if tag == "div" and BORDER_TOP_RE.search(attrs.get("style") or "") and "padding" in (attrs.get("style") or ""):
            return True
        return False

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

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

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


def html_to_text(html, drop_quotes=False):
    """Readable text of `html`; with `drop_quotes`, without the quoted history clients mark."""
    if not html:
        return ""
    writer = _TextWriter(drop_quotes)
    try:
        writer.feed(html)
        writer.close()
    except Exception:  # html.parser is tolerant, but never let markup stop a message
        pass
    return writer.text()
