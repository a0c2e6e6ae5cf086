"""Bytes and header words to text, the way real (often wrong) mail needs it.

Used by `connector.mail.parse`. Nothing here raises on bad input: each
function falls back to a best effort and appends what it worked around to a
`defects` list.

- `decode_bytes(data, charset)`: a declared charset first, but bytes that are
  valid UTF-8 win over a declared legacy charset (Big5/latin-1 labels on UTF-8
  text are common); unknown charsets and undeclared 8-bit text are guessed
  (UTF-8, then a Cyrillic/Western heuristic); ISO-2022-JP falls back to the
  Microsoft/NEC extensions (circled digits) that Japanese mailers send.
- `decode_header(value)`: unfolds, decodes raw 8-bit bytes, then RFC 2047
  encoded words (also unseparated or inside quotes, with any charset above).
- `clean_text(text)`: what every decoded header value goes through before
  anyone reads it: no control character (an encoded CR/LF, NUL, ESC) ever
  leaves this module, so none reaches an outgoing header, a template, a log
  line or a terminal (issue 9).

Only text codecs that read arbitrary bytes count as charsets: `hex`, `uu`,
`base64`, `zlib`, `rot13` (bytes-to-bytes codecs), `idna`, `punycode` and
`undefined` are labels an attacker chose, read as undeclared 8-bit text.
"""

import base64
import binascii
import codecs
import re

ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "ascii",
    "ascii": "ascii", "ansi_x3.4-1968": "ascii", "utf8": "utf-8", "utf-8": "utf-8",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6", "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949", "euc-kr": "cp949", "x-sjis": "cp932", "shift_jis": "cp932",
    "shift-jis": "cp932", "sjis": "cp932", "windows-31j": "cp932", "gb2312": "gb18030",
    "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030", "big5": "big5hkscs",
    "tis-620": "cp874", "windows-874": "cp874", "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7", "x-unicode20utf8": "utf-8", "iso-2022-jp": "iso-2022-jp",
}
ASCII_UNSAFE_RE = re.compile(r"(?i)utf-?(?:16|32|7)|ucs|unicode|2022|^hz")   # 7-bit bytes, not ASCII text
GUESS = {"unknown-8bit", "x-unknown", "unknown", "x-user-defined", "default", "charset", "8bit", ""}
ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?(.*?)\?=", re.S)
EW_GAP_RE = re.compile(r"(\?=)[ \t\r\n]+(=\?)")
FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
QP_WORD_RE = re.compile(r"=([0-9A-Fa-f]{2})")


# Text codecs of Python that are no mail charset: they refuse most bytes or the
# 'replace' error handler, or decode escapes (a charset label is the sender's choice).
NOT_CHARSETS = {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
SPACE_CONTROLS_RE = re.compile("[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]+")
CONTROLS_RE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]+")


def clean_text(text):
    """`text` without control characters: line breaks, tabs and separators become one
    space, the others (NUL, ESC, DEL, C1) are dropped."""
    if text.isprintable():
        return text
    return CONTROLS_RE.sub("", SPACE_CONTROLS_RE.sub(" ", text))


def charset_codec(charset):
    """A Python codec name for a MIME charset label, or None when unknown, 'guess' or no text charset."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in GUESS:
        return None
    label = ALIASES.get(label, label)
    if label == "iso-2022-jp":
        return label
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):   # ValueError: a NUL in the label
        return None
    # _is_text_encoding is False for the bytes-to-bytes codecs (hex, base64, zlib, rot13...)
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_CHARSETS:
        return None
    return info.name


C1_RE = re.compile("[\x80-\x9f]")


def _utf8(data):
    """`data` as UTF-8, or None; C1 control characters mean it is a Windows charset in disguise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if C1_RE.search(text) else text


def _guess_8bit(data):
    """Undeclared 8-bit text: UTF-8, else Cyrillic (KOI8-R or CP1251) or Western (CP1252)."""
    text = _utf8(data)
    if text is not None:
        return text, "utf-8"
    high = sum(1 for b in data if b >= 0xC0)
    ascii_letters = sum(1 for b in data if b < 0x80 and 0x41 <= (b & 0xDF) <= 0x5A)
    if high and high > ascii_letters:   # mostly non-ASCII letters: a Cyrillic alphabet
        upper_half = sum(1 for b in data if b >= 0xE0)
        codec = "cp1251" if upper_half * 2 >= high else "koi8_r"   # Russian text is mostly lower case
        return data.decode(codec, "replace"), codec
    return data.decode("cp1252", "replace"), "cp1252"


def _iso2022jp_ms(data):
    """ISO-2022-JP with the CP932 (NEC/IBM) extensions, which Python's codec refuses."""
    out, mode, i, n = bytearray(), "ascii", 0, len(data)
    while i < n:
        byte = data[i]
        if byte == 0x1B:
            seq = data[i + 1:i + 3]
            mode = {b"(B": "ascii", b"(J": "ascii", b"$@": "jis", b"$B": "jis", b"(I": "kana"}.get(seq, mode)
            i += 3 if seq[:1] in (b"(", b"$") else 1
            continue
        if mode == "jis" and 0x21 <= byte <= 0x7E and i + 1 < n:
            j1, j2 = byte, data[i + 1]
            s1 = ((j1 + 1) >> 1) + 0x70
            s1 = s1 + 0x40 if s1 >= 0xA0 else s1
            s2 = j2 + (0x1F + (j2 >= 0x60) if j1 & 1 else 0x7E)
            out += bytes((s1, s2 & 0xFF))
            i += 2
            continue
        out.append(byte + 0x80 if mode == "kana" and 0x21 <= byte <= 0x5F else byte)
        i += 1
    return out.decode("cp932", "replace")


def decode_bytes(data, charset, defects=None, where="body"):
    """`data` as text; `charset` is the declared label (may be wrong, unknown or None)."""
    if not data:
        return ""
    if data.isascii() and not (charset and ASCII_UNSAFE_RE.search(charset)):
        return data.decode("ascii")
    codec = charset_codec(charset)
    if codec is None:
        text, guessed = _guess_8bit(data)
        if defects is not None and charset and charset.strip().lower() not in GUESS:
            defects.append(f"{where}: unknown charset {charset!r}, read as {guessed}")
        return text
    if codec not in ("utf-8", "utf-16", "utf-32") and not data.isascii():
        text = _utf8(data)
        if text is not None:
            if codec != "ascii" and defects is not None:
                defects.append(f"{where}: declared {charset!r} but is UTF-8")
            return text
    if codec == "iso-2022-jp":
        try:
            return data.decode("iso2022_jp")
        except UnicodeDecodeError:
            return _iso2022jp_ms(data)
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError, ValueError):
        if codec == "ascii":
            return _guess_8bit(data)[0]
        if defects is not None:
            defects.append(f"{where}: bytes invalid in {charset!r}, replaced")
        try:
            return data.decode(codec, "replace")
        except (UnicodeError, LookupError, ValueError):   # a codec without 'replace'
            return _guess_8bit(data)[0]


def _word_bytes(encoding, payload):
    if encoding in "bB":
        payload = re.sub(r"[^A-Za-z0-9+/]", "", payload)
        try:
            return base64.b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return payload.encode("ascii", "replace")
    payload = payload.replace("_", " ")
    return QP_WORD_RE.sub(lambda m: chr(int(m.group(1), 16)), payload).encode("latin-1", "replace")


def decode_words(text, defects=None):
    """Decode RFC 2047 encoded words in `text` (whitespace between adjacent words dropped)."""
    if "=?" not in text:
        return text
    text = EW_GAP_RE.sub(r"\1\2", text)
    # adjacent words of one charset are joined before decoding: a multi-byte
    # character may be split across words (common with ISO-2022-JP and UTF-8)
    out, last_charset, pending, pos = [], None, bytearray(), 0
    for match in ENCODED_WORD_RE.finditer(text):
        charset = match.group(1).split("*", 1)[0]
        if match.start() != pos or (last_charset and charset.lower() != last_charset.lower()):
            if pending:
                out.append(decode_bytes(bytes(pending), last_charset, defects, "header"))
                pending = bytearray()
            out.append(text[pos:match.start()])
        pending += _word_bytes(match.group(2), match.group(3))
        last_charset, pos = charset, match.end()
    if pending:
        out.append(decode_bytes(bytes(pending), last_charset, defects, "header"))
    out.append(text[pos:])
    return "".join(out)


def header_bytes_text(value, hint=None, defects=None):
    """A raw header value from the parser (8-bit bytes kept as surrogates) as text."""
    if value.isascii():
        return value
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:   # already text (a str-built message)
        return value
    text = _utf8(data)
    if text is not None:
        return text
    if hint and charset_codec(hint) not in (None, "ascii", "utf-8"):
        if defects is not None:
            defects.append(f"header: raw 8-bit bytes read as {hint}")
        return decode_bytes(data, hint)
    if defects is not None:
        defects.append("header: raw 8-bit bytes, charset guessed")
    return _guess_8bit(data)[0]


def decode_header(value, hint=None, defects=None):
    """Unfolded, fully decoded text of a raw header value, without control characters."""
    if not value:
        return ""
    value = FOLD_RE.sub("", value).replace("\r", "").replace("\n", " ")
    return clean_text(decode_words(header_bytes_text(value, hint, defects), defects)).strip()


PARAM_RE = re.compile(r';\s*([\w.-]+?)(\*\d+)?(\*)?\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
PERCENT_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def header_params(value, defects=None):
    """{name: text} of a raw Content-Type / Content-Disposition value.

    Tolerant where the stdlib is strict: unquoted values with spaces,
    encoded words in values, RFC 2231 continuations and charsets (any codec
    `decode_bytes` knows), backslash escapes in quoted strings.
    """
    value = FOLD_RE.sub("", value).replace("\r", "").replace("\n", " ")
    pieces = {}
    for match in PARAM_RE.finditer(";" + value.partition(";")[2]):
        name, index, extended, raw = match.groups()
        raw = raw.strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:])
        pieces.setdefault(name.lower(), []).append((int(index[1:]) if index else 0, bool(extended), raw))
    params = {}
    for name, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        if not any(extended for _, extended, _ in parts):
            params[name] = clean_text(
                decode_words(header_bytes_text("".join(p[2] for p in parts), None, defects), defects))
            continue
        charset, data = None, bytearray()
        for number, (index, extended, raw) in enumerate(parts):
            if extended and number == 0 and raw.count("'") >= 2:
                charset, _, raw = raw.split("'", 2)
            if extended:
                data += PERCENT_RE.sub(lambda m: chr(int(m.group(1), 16)), raw).encode("latin-1", "replace")
            else:
                data += raw.encode("utf-8", "surrogateescape")
        params[name] = clean_text(decode_bytes(bytes(data), charset or "utf-8", defects, "parameter"))
    return params
