"""The filing worker's cheaper paths (issue 14) give what the slower ones gave: the parse of a
one-part mail, the charset hint, folded header lines, the Date header."""

import dataclasses
import email
import email.policy
import re

import pytest

from connector.mail import parse
from connector.outbound import compose

ONE_PART = [
    b"From: a@client.test\r\nTo: support@example.test\r\nSubject: Hi\r\n\r\nHello\r\n\r\nBye\r\n",
    b"From: a@client.test\nSubject: LF only\n\nline\n",
    b"Subject: folded\r\n  over two\r\n lines\r\nFrom: <a@b.test>\r\n\r\nbody",
    b"Subject: no body\r\n\r\n",
    b"Subject: bare CR\rX-Odd: yes\r\n\r\nbody\r\n",
    b"Subject: 8-bit \xc3\xa9t\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9\r\n",
    b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak =C3=A9\r\n",
    b": empty name\r\nSubject: x\r\n\r\nbody\r\n",
]
FULL_PARSE = [  # each is read by the whole parser: the answer must be the same either way
    b"From someone Tue Dec  1 16:29:22 2026\r\nSubject: mbox\r\n\r\nbody\r\n",
    b"Subject: no blank line\r\nnot a header\r\nmore\r\n",
    b"Subject: only headers\r\n",
    b"\r\nbody without headers\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b--\r\n",
    b"Content-Type:\r\n multipart/alternative; boundary=\"x\"\r\n\r\n--x\r\n\r\ntext\r\n--x--\r\n",
    b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n",
    b"Subject: a word: multipart\r\n\r\nbody\r\n",
]


def _parsed(raw):
    parsed = parse.parse_message(raw)
    fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed) if f.name != "msg"}
    tree = [(part.get_content_type(), None if part.is_multipart() else part.get_payload(),
             [type(d).__name__ for d in part.defects]) for part in parsed.msg.walk()]
    return fields, tree


@pytest.mark.parametrize("raw", ONE_PART + FULL_PARSE)
def test_a_mail_parses_as_the_whole_parser_reads_it(raw, monkeypatch):
    fast = _parsed(raw)
    monkeypatch.setattr(parse, "_single_part_head_end", lambda text: None)
    assert fast == _parsed(raw)


@pytest.mark.parametrize("raw", ONE_PART)
def test_a_one_part_mail_skips_the_line_by_line_parse(raw):
    assert parse._single_part_head_end(raw.decode("ascii", "surrogateescape")) is not None


@pytest.mark.parametrize("raw", FULL_PARSE)
def test_a_composite_or_odd_mail_goes_through_the_whole_parser(raw):
    assert parse._single_part_head_end(raw.decode("ascii", "surrogateescape")) is None


@pytest.mark.parametrize("raw", [
    b"", b"charset", b"Content-Type: text/plain; CHARSET = \"ISO-8859-1\"\r\n",
    b"x" * 70000 + b"charset=utf-8", b"x" * 65530 + b"charset=utf-8", b"charset: no\r\ncharset=koi8-r",
    b"\xc3\xa9 ChArSeT\t=\tutf-8",
])
def test_the_charset_hint_is_the_first_charset_declared(raw):
    found = re.compile(rb"charset\s*=\s*\"?([-\w.:]+)", re.I).search(raw, 0, 65536)
    assert parse._charset_hint(raw) == (found.group(1).decode() if found else None)


@pytest.mark.parametrize("value", [
    "<t21.6cc569a33b21be9e.2a1c2c42ff09ed2b@example.test> <19.0003.0000@vm> "
    "<t21.8103f1f34473eccd.c516c5016786a961@example.test>",
    " ".join(f"<{i}.{'x' * (i * 7 % 60)}@example.test>" for i in range(30)),
    "<" + "y" * 200 + "@example.test> <short@x>  <two.spaces@before> <" + "z" * 90 + ">",
    "a@example.test, b@example.test, " * 6 + "c@example.test",
])
def test_a_long_header_is_folded_at_spaces_and_reads_back_whole(value):
    line = compose._encode("References", value)
    lines = line.decode("ascii").split("\r\n")
    assert lines[-1] == "" and all(rest.startswith(" ") and rest.strip() for rest in lines[1:-1])
    for text in lines[:-1]:   # a longer line holds one word the fold cannot split
        assert len(text) <= compose.FOLD_AT or " " not in text.strip()[len("References: "):].strip()
    message = email.message_from_bytes(line + b"\r\nbody", policy=email.policy.compat32)
    assert message["References"].replace("\r\n", "") == value


def test_the_date_header_is_the_time_it_is_written(monkeypatch):
    moments = iter([1796162760.2, 1796162760.9, 1796162761.1])
    monkeypatch.setattr(compose.time, "time", lambda: next(moments))
    first, same, later = compose.date_now(), compose.date_now(), compose.date_now()
    assert first == same == email.utils.formatdate(1796162760, localtime=True)
    assert later == email.utils.formatdate(1796162761, localtime=True)
