"""The copy a stranger's mail becomes: only its MIME headers travel, and no line is longer
than a relay accepts. Through the real daemon; the relay's bytes are checked."""

import email
import email.policy

from conftest import wait_for

STRICT = email.policy.SMTP.clone(raise_on_defect=True)


def _copy_for(daemon, sink, raw, to="jane@example.com"):
    daemon.send(raw, sender="ann@acme.example", rcpts=["support@example.com"])
    return wait_for(lambda: sink.to(to), 15, what=f"the copy for {to}")[0][2]


def test_a_long_body_line_and_sender_chosen_headers_do_not_reach_staff(daemon, sink):
    raw = (b"From: Ann <ann@acme.example>\r\nTo: support@example.com\r\nSubject: Long line\r\n"
           b"Message-ID: <long.1@acme.example>\r\nMail-Reply-To: attacker@evil.example\r\n"
           b"Resent-From: ceo@example.com\r\nX-MS-Exchange-Organization-SCL: -1\r\n"
           b"X-Long: " + b"h" * 1200 + b"\r\nSubject2: bare lf\nX-Injected: barelf\r\n\r\n"
           + b"word " * 240 + b"\r\nAnn\r\n")
    copy = _copy_for(daemon, sink, raw)
    assert max(len(line) for line in copy.split(b"\r\n")) <= 998   # a relay would refuse it (500)
    head = copy.split(b"\r\n\r\n", 1)[0].lower()
    for planted in (b"mail-reply-to", b"resent-from", b"x-ms-exchange", b"x-long", b"x-injected"):
        assert planted not in head
    text = email.message_from_bytes(copy, policy=STRICT).get_content()
    assert text.startswith("word word") and text.count("word") == 240


def test_a_multipart_with_a_long_html_line_keeps_both_parts(daemon, sink):
    raw = (b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: Html\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=XX\r\n\r\n--XX\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe text\r\n--XX\r\nContent-Type: text/html\r\n\r\n"
           b"<p>" + b"<b>x</b> " * 500 + b"</p>\r\n--XX--\r\n")
    copy = _copy_for(daemon, sink, raw)
    assert max(len(line) for line in copy.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(copy, policy=STRICT)
    assert parsed.get_body(("plain",)).get_content().strip() == "the text"
    assert parsed.get_body(("html",)).get_content().count("<b>x</b>") == 500


def test_a_mail_nested_past_what_readers_walk_is_copied_as_text(daemon, sink):
    """3,000 nested parts: Python's own reader recurses to death on such a copy; staff get the
    text the parse read (none here: past 30 levels a part is opaque) and where the original is."""
    raw = b"From: ann@acme.example\r\nTo: support@example.com\r\nSubject: Deep\r\nMIME-Version: 1.0\r\n"
    for level in range(3000):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
    raw += b"Content-Type: text/plain\r\n\r\ndeep text\r\n"
    copy = _copy_for(daemon, sink, raw)
    parsed = email.message_from_bytes(copy, policy=STRICT)
    assert "message export" in parsed.get_content()
    assert max(len(line) for line in copy.split(b"\r\n")) <= 998
