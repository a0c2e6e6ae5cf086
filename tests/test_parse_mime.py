"""parse_message on real-world shapes of mail (fixtures in tests/fixtures/mail)."""

from pathlib import Path

import pytest

from connector.mail.automatic import classify
from connector.mail.parse import parse_message

MAIL = Path(__file__).parent / "fixtures" / "mail"


def parse(name):
    return parse_message((MAIL / name).read_bytes())


def test_raw_8bit_headers_use_the_declared_charset():
    parsed = parse("latin1_raw_headers.eml")
    assert parsed.subject == "Drücker kaputt"
    assert (parsed.from_name, parsed.from_addr) == ("Jörg Müller", "joerg@example.de")
    assert parsed.text == "Der Drücker im 3. Stock druckt nicht.\n"
    assert any("8-bit" in d for d in parsed.defects)


def test_utf8_body_labelled_big5_is_read_as_utf8():
    parsed = parse("utf8_labelled_big5.eml")
    assert "您好！ 你今天好吗？" in parsed.text
    assert parsed.subject == "您好"


def test_iso_2022_jp_with_vendor_characters():
    parsed = parse("iso2022jp.eml")
    assert parsed.subject == "①テスト"         # circled digit: a CP932 extension, split over two words
    assert parsed.from_name == "山田"
    assert parsed.text.strip() == "お問い合わせありがとうございます。"


def test_attachments_at_any_depth_with_odd_names():
    parsed = parse("attachments.eml")
    assert (parsed.from_addr, parsed.from_name) == ("bob@example.com", "alice@example.com")
    assert parsed.text == "First text part.\n\nSecond text part."
    names = [a.name for a in parsed.attachments]
    assert names == ["This is a test.pdf", "Отчёт.txt", "Forwarded order.eml", "Bildä.png"]
    assert parsed.attachments[0].size == len(b"%PDF-1.4 fake")
    assert parsed.attachments[2].content_type == "message/rfc822"


@pytest.mark.parametrize("header, name, address", [
    ("jdoe@example.net (John Doe)", "John Doe", "jdoe@example.net"),
    ('"alice@example.com" <bob@example.com>', "alice@example.com", "bob@example.com"),
    ("alice@example.com <bob@example.com>", "alice@example.com", "bob@example.com"),
    ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <J@Example.DE>", "Jörg Müller", "j@example.de"),
    ('"Doe, John" <john@example.com>', "Doe, John", "john@example.com"),
    ("Moderator-Address <moderator>", "Moderator-Address", "moderator"),
    ("Müller, Hans <hans@acme.example>", "Hans", "hans@acme.example"),   # unquoted comma
])
def test_sender_forms(header, name, address):
    parsed = parse_message(f"From: {header}\nSubject: x\n\nbody\n".encode())
    assert (parsed.from_name, parsed.from_addr) == (name, address)


def test_html_only_mail_is_converted_and_flagged():
    parsed = parse("gmail_html_reply.eml")
    assert parsed.text_from_html and "<blockquote" in parsed.html
    assert parsed.text.startswith("It works again, thank you!\nSee the status page (https://status.example.com/vpn).")


def test_empty_text_plain_gives_way_to_html():
    raw = (b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n"
           b"--b\nContent-Type: text/plain\n\n  \n--b\nContent-Type: text/html\n\n<p>The html part.</p>\n--b--\n")
    assert parse_message(raw).text == "The html part."


def test_real_text_plain_wins_over_html():
    raw = (b"From: a@example.com\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n"
           b"--b\nContent-Type: text/plain\n\nPlain words.\n--b\nContent-Type: text/html\n\n<p>Html words.</p>\n--b--\n")
    parsed = parse_message(raw)
    assert parsed.text.strip() == "Plain words." and not parsed.text_from_html


def test_uuencoded_file_leaves_the_text():
    parsed = parse("uuencoded.eml")
    assert "begin 644" not in parsed.text and "Bye." in parsed.text
    assert [(a.name, a.size) for a in parsed.attachments] == [("hello.txt", 12)]


def test_encapsulated_message_body_is_read():
    raw = (b"From: a@example.com\nSubject: outer\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n"
           b"From: b@example.com\nSubject: inner\n\nThe inner text.\n")
    assert parse_message(raw).text.strip() == "The inner text."


@pytest.mark.parametrize("raw", [
    b"", b"\x00\xff" * 100, b"Subject: =?utf-8?B?####?=\n\n", b"Content-Type: multipart/mixed\n\n--x\n",
    b"From: <<<@@@>>>\nTo: ,,,\n\n", b"Content-Type: text/plain; charset=no-such-charset\n\n\xe9t\xe9\n",
    b"Subject: =?x-unknown?Q?caf=E9?=\n\n", b"Content-Type: text/plain; charset=utf-16le\n\nA\x00B\x00",
])
def test_never_raises(raw):
    parsed = parse_message(raw)
    classify(parsed)
    assert isinstance(parsed.text, str) and isinstance(parsed.defects, list)


def test_garbage_file_never_raises():
    parse("garbage.eml")


def test_precedence_twice_and_exchange_out_of_office():
    bulk = parse_message(b"From: a@example.com\nPrecedence: never-bounce\nPrecedence: bulk\n\nhi\n")
    assert classify(bulk).is_auto_reply
    human = parse_message(b"From: a@example.com\nPrecedence: never-bounce\n\nhi\n")
    assert not classify(human).is_automatic
    oof = parse_message(b"From: a@example.com\nX-Auto-Response-Suppress: All\n"
                        b"X-MS-Exchange-Inbox-Rules-Loop: a@example.com\n\nI am away\n")
    assert classify(oof).is_auto_reply
    outlook = parse_message(b"From: a@example.com\nX-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\n\nhi\n")
    assert not classify(outlook).is_automatic   # a person's mail (no auto-response: pipeline.budget)


def test_plain_4k_message_parses_to_its_text():
    """Its speed is measured in bench/hostile.py (plain_4k), never asserted here."""
    body = ("An ordinary line of a support request, long enough to be typical.\n" * 60)[:3800]
    raw = ("From: Jane <jane@example.com>\r\nTo: support@example.com\r\nSubject: Printer\r\n"
           "Message-ID: <a@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
    parsed = parse_message(raw)
    assert parsed.text.strip() == body.strip() and parsed.subject == "Printer" and parsed.defects == []


def test_a_boundary_folded_over_two_lines_still_splits_the_parts():
    raw = (b"From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n"
           b"    boundary=\"----=_NextPart\r\n _000_0002\"\r\n\r\n------=_NextPart _000_0002\r\n"
           b"Content-Type: text/plain\r\n\r\nThe text.\r\n------=_NextPart _000_0002\r\n"
           b"Content-Type: image/png; name=a.png\r\nContent-Disposition: attachment\r\n\r\nPNG\r\n"
           b"------=_NextPart _000_0002--\r\n")
    parsed = parse_message(raw)
    assert parsed.text.strip() == "The text." and [a.name for a in parsed.attachments] == ["a.png"]


def test_raw_8bit_header_values_reach_other_readers_as_text():
    """The bounce detectors read `parsed.msg` directly: they get text, never Header objects."""
    parsed = parse_message(b"From: J\xc3\xb6rg <mailer-daemon@example.com>\nSubject: Dr\xfccker\n\nbody\n")
    assert parsed.msg.get("from") == "Jörg <mailer-daemon@example.com>"
    assert isinstance(parsed.msg.get("subject"), str)
