"""Hostile mail a stranger can send (issue 9, items 1, 3 and 4): header injection
through encoded CR/LF, charsets that are no charsets, absurd nesting and sizes.

Parsing never raises and never loses From, Subject or the raw bytes; no decoded
value reaches an outgoing header, a template or the terminal with a control
character in it. The injection cases are checked on the bytes the relay
receives from the real daemon.
"""

import re
from email import policy
from email.parser import BytesParser

import pytest

from conftest import Instance, make_mail, wait_for
from connector.mail.parse import MAX_DEPTH, MAX_HEADERS, MAX_PARTS, MAX_REFERENCES, parse_message
from connector.pipeline.reference import MAX_TICKET_NUMBER, ticket_number

STRICT = policy.SMTP.clone(raise_on_defect=True)
CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def mail(subject=b"Hello", sender=b"Ann <ann@acme.example>", headers=b"", body=b"Hello.\n"):
    return b"From: " + sender + b"\nTo: support@example.com\nSubject: " + subject + b"\n" + headers + b"\n" + body


def assert_clean(parsed):
    values = [parsed.subject, parsed.from_name, parsed.from_addr, parsed.message_id, *parsed.to,
              *parsed.references, *(a.name for a in parsed.attachments)]
    assert not [v for v in values if CONTROL_RE.search(v)]


# -- item 4: parsing never raises and keeps From and Subject -------------------

NOT_CHARSETS = ["hex", "uu", "base64", "zlib", "bz2", "rot13", "idna", "undefined", "punycode",
                "unicode_escape", "utf-\x008"]


@pytest.mark.parametrize("charset", NOT_CHARSETS)
def test_an_encoded_word_in_a_codec_that_is_no_charset(charset):
    parsed = parse_message(mail(b"Re: =?" + charset.encode() + b"?q?=FF=FEx?= help",
                                b"=?" + charset.encode() + b"?b?/w==?= <ann@acme.example>"))
    assert parsed.from_addr == "ann@acme.example"
    assert parsed.subject.startswith("Re: ") and parsed.subject.endswith(" help")
    assert_clean(parsed)


@pytest.mark.parametrize("charset", ["hex", "uu", "base64", "zlib", "bz2", "rot13", "idna", "undefined"])
def test_a_codec_as_the_charset_of_raw_8bit_headers_and_body(charset):
    raw = (b"From: J\xf6rg <joerg@acme.example>\nSubject: Dr\xfccker kaputt\nMIME-Version: 1.0\n"
           b"Content-Type: text/plain; charset=" + charset.encode() + b"\n\nDer Dr\xfccker.\n")
    parsed = parse_message(raw)
    assert (parsed.from_name, parsed.from_addr, parsed.subject) == ("Jörg", "joerg@acme.example", "Drücker kaputt")
    assert parsed.text == "Der Drücker.\n"


def test_non_ascii_in_a_uuencoded_part():
    parsed = parse_message(mail(body=b"See the file.\nbegin 644 data.bin\nM\xe4\xf6\xfc\xe4\xf6\xfc\n#86)C\n`\nend\n"))
    assert parsed.text.strip() == "See the file."
    assert [a.name for a in parsed.attachments] == ["data.bin"]


def test_thousand_levels_of_nesting_keep_from_and_subject():
    body = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(1000))
    parsed = parse_message(mail(b"Deep", headers=b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b0\n",
                                body=body + b"innermost\n"))
    assert (parsed.subject, parsed.from_addr, parsed.from_name) == ("Deep", "ann@acme.example", "Ann")
    assert parsed.capped == {"depth": MAX_DEPTH}


def test_thousand_nested_forwards_keep_from_and_subject():
    parsed = parse_message(mail(b"Fwd", headers=b"Content-Type: message/rfc822\n",
                                body=b"Content-Type: message/rfc822\n\n" * 1000 + b"Subject: inner\n\ntext\n"))
    assert (parsed.subject, parsed.from_addr) == ("Fwd", "ann@acme.example")
    assert parsed.capped == {"depth": MAX_DEPTH}


def test_a_five_thousand_digit_ticket_number_is_no_ticket():
    assert ticket_number("9" * 5000) > MAX_TICKET_NUMBER
    assert ticket_number("0" * 5000 + "12") == 12


def test_a_five_thousand_digit_ticket_number_goes_to_triage(tmp_path):
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.settings import load_settings
    from connector.store.spool import unsaved_entry
    runner = Runner(open_services(load_settings(Instance(tmp_path, 2500).ini)))
    for subject in (b"[Ticket #" + b"9" * 5000 + b"] help", b"Re: [Ticket #" + b"0" * 5000 + b"1] help"):
        spool = unsaved_entry(mail(subject), rcpt_to=["support@example.com"], intake="test")
        assert runner.dry_run(spool).summary()["reason"] == "unknown_ticket"


# -- item 3: work per message is capped, what was capped is noted --------------

def test_parts_past_the_cap_are_not_read():
    parts = b"".join(b'--b\nContent-Type: application/octet-stream; name="f%d.bin"\n\nAAAA\n' % i
                     for i in range(MAX_PARTS + 20))
    parsed = parse_message(mail(b"Parts", headers=b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n",
                                body=parts + b"--b--\n"))
    assert len(parsed.attachments) == MAX_PARTS and parsed.capped == {"parts": MAX_PARTS + 20}
    assert parsed.subject == "Parts"


def test_references_past_the_cap_keep_the_first_and_the_last():
    refs = [f"<r{i}@acme.example>" for i in range(MAX_REFERENCES * 3)]
    parsed = parse_message(mail(headers=b"References: " + " ".join(refs).encode() + b"\n"))
    assert parsed.references == refs[:1] + refs[1 - MAX_REFERENCES:]
    assert parsed.capped == {"references": MAX_REFERENCES * 3}


def test_headers_past_the_cap_are_not_stored():
    filler = b"".join(b"X-Filler: %d\n" % i for i in range(MAX_HEADERS + 10))
    parsed = parse_message(mail(headers=filler + b"X-Late: 1\n"))
    assert parsed.subject == "Hello" and not parsed.has_header("x-late")
    assert len(parsed.header_all("x-filler")) == MAX_HEADERS - 3     # From, To, Subject come first
    assert parsed.capped == {"headers": MAX_HEADERS + 14}


def test_begin_lines_without_end_stay_text():
    parsed = parse_message(mail(body=b"begin 644 x\nM\n" * 2000 + b"bye\n"))
    assert parsed.attachments == [] and parsed.text.count("begin 644 x") == 2000
    parsed = parse_message(mail(body=b"hi\nbegin 644 real.bin\n#86)C\n`\nend\nbye\n"))
    assert [(a.name, a.size) for a in parsed.attachments] == [("real.bin", 3)] and parsed.text == "hi\nbye\n"


def test_an_overlong_message_id_is_not_read():
    parsed = parse_message(mail(headers=b"Message-ID: <" + b"t" + b"1" * 5000 + b".a.b@example.com>\n"
                                        b"In-Reply-To: <t" + b"1" * 5000 + b".a.b@example.com>\n"))
    assert parsed.message_id == "" and parsed.in_reply_to == []


# -- item 1: no control character in any decoded value -------------------------

@pytest.mark.parametrize("subject", [
    b"=?utf-8?q?hi=0D=0A=0D=0AClick_http://evil.example?=",
    b"=?utf-8?b?aGkNCg0KQ2xpY2s=?=",
    b"=?utf-8?q?red=1B[31m_text=00=07=C2=9B?=",
    b"=?utf-8?q?" + b"x" * 300 + b"=0D=0ABcc:_victim@else.example?=",
])
def test_decoded_subjects_carry_no_control_character(subject):
    parsed = parse_message(mail(subject))
    assert_clean(parsed)
    assert parsed.subject and "  " not in parsed.subject.strip()


def test_decoded_names_addresses_and_file_names_carry_no_control_character():
    raw = (b"From: =?utf-8?q?Jane=0D=0AX-Injected:_1?= <ann@acme.example>\n"
           b"To: \"a\x1b[2J\" <x\x00y@acme.example>\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nHi\n"
           b"--b\nContent-Type: application/pdf\n"
           b"Content-Disposition: attachment; filename*=utf-8''evil%0D%0A.pdf\n\nx\n--b--\n")
    parsed = parse_message(raw)
    assert parsed.from_name == "Jane X-Injected: 1"
    assert parsed.to == ["xy@acme.example"]
    assert [a.name for a in parsed.attachments] == ["evil .pdf"]
    assert_clean(parsed)


# -- item 1 through the daemon: the bytes the relay receives -------------------

def header_block(raw):
    return raw.partition(b"\r\n\r\n")[0]


def assert_sound(raw, required):
    """One header block with the headers we wrote; it re-parses strictly; no value has a control character."""
    head = header_block(raw)
    names = [line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert "x-injected" not in names and "bcc" not in names
    assert required <= set(names), head
    msg = BytesParser(policy=STRICT).parsebytes(head + b"\r\n\r\n")
    for name, value in msg.items():
        assert not CONTROL_RE.search(str(value)), (name, value)


AUTO_RESPONSE_HEADERS = {"from", "to", "subject", "message-id", "auto-submitted", "x-loop", "mime-version",
                         "content-type", "content-transfer-encoding"}
COPY_HEADERS = {"from", "reply-to", "subject", "message-id", "x-loop"}


def test_encoded_crlf_in_subjects_and_names_never_reach_the_relay(daemon, sink):
    # long enough for email.header to fold it: its CR/LF + 'Name:' raised HeaderParseError (a shunt)
    long_subject = b"=?utf-8?q?" + b"y" * 120 + b"=0D=0AX-Injected:_1=0D=0A=0D=0AClick_http://evil.example?="
    daemon.send(mail(b"=?utf-8?q?hi=0D=0A=0D=0AClick_http://evil.example?=").replace(b"\n", b"\r\n"),
                "ann@acme.example", ["support@example.com"])
    daemon.send(mail(long_subject, b"Ann <ann@beta.example>").replace(b"\n", b"\r\n"),
                "ann@beta.example", ["support@example.com"])
    daemon.wait_processed(2)
    # an employee answers with a display name that would add a header to the customer's copy
    daemon.send(mail(b"Re: [Ticket #1] hi", b"=?utf-8?q?Jane=0D=0AX-Injected:_1?= <jane@example.com>")
                .replace(b"\n", b"\r\n"), "jane@example.com", ["support@example.com"])
    daemon.wait_processed(3)
    assert [s for s in daemon.spool_states() if s[1] != "done"] == []        # nothing shunted
    daemon.wait_delivered()
    wait_for(lambda: len(sink.to("ann@acme.example")) == 2 and sink.to("ann@beta.example"), what="relay")
    auto, copy = sorted(sink.to("ann@acme.example"), key=lambda m: b"Auto-Submitted" not in m[2])
    assert_sound(auto[2], AUTO_RESPONSE_HEADERS)
    assert b"Click http://evil.example" not in auto[2].partition(b"\r\n\r\n")[2]
    assert_sound(copy[2], COPY_HEADERS)
    assert b"From: \"Jane X-Injected: 1\" <support@example.com>" in header_block(copy[2])
    for _, _, raw in sink.messages:
        assert_sound(raw, {"from", "subject", "message-id"})
    subjects = [t["subject"] for t in daemon.tickets()]
    assert subjects[0] == "hi Click http://evil.example" and subjects[1].endswith(" Click http://evil.example")


def test_the_terminal_gets_no_escape_sequence(daemon, sink):
    daemon.send(make_mail(subject="=?utf-8?q?=1B]0;owned=07=1B[2Jcleared?=", body="Body \x1b[31mred\x1b[0m\n"))
    daemon.wait_processed(1)
    for args in (("tickets", "list"), ("tickets", "show", "1"), ("tickets", "list", "--json"),
                 ("tickets", "show", "1", "--json"), ("outbox", "list")):
        out = daemon.cli(*args).stdout.decode()
        assert "\x1b" not in out and "\x07" not in out, args
    assert "\\u001b[31mred" in daemon.cli("tickets", "show", "1").stdout.decode()
    assert daemon.tickets()[0]["subject"] == "]0;owned[2Jcleared"


def test_the_composer_cleans_what_slipped_past_the_parser(tmp_path):
    """The second line of defence: values with CR/LF/NUL handed to the composer directly."""
    from connector.app import open_services
    from connector.outbound import compose
    from connector.pipeline.context import Outgoing
    from connector.settings import load_settings
    services = open_services(load_settings(Instance(tmp_path, 2500).ini))
    templates = compose.Templates(services.settings.folder_candidates("templates"))
    original = mail(headers=b"X-Bare: a\rBcc: victim@else.example\nX-Nul: a\x00b\n").replace(b"\n", b"\r\n")
    parsed = parse_message(original)
    parsed.subject, parsed.from_name = "hi\r\n\r\nClick http://evil.example", "Jane\r\nX-Injected: 1"
    evil = "Jane\r\nX-Injected: 1"
    public = services.settings.public_address
    out = Outgoing("distribution", ["bob@example.com"], ["bob@example.com"], ["carl@example.com\r\nBcc: x@y"],
                   from_name=evil, from_address=public, subject="[Ticket #1] hi\r\nX-Injected: 1",
                   message_id="<m1@example.com>", original_from="ann@acme.example\r\nBcc: x@y")
    copy = compose.redistribution(original, parsed, out, services)
    assert_sound(copy, COPY_HEADERS)
    head = copy.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-bare" not in head and b"x-nul" not in head   # only the original's MIME headers travel
    subject, body = compose.auto_response_text(parsed, services, templates, 1, parsed.subject)
    auto = Outgoing("auto_response", ["ann@acme.example"], ["ann@acme.example"], from_name=evil,
                    from_address=public, subject=subject, body=body, message_id="<m2@example.com>")
    assert_sound(compose.auto_response(parsed, auto, services), AUTO_RESPONSE_HEADERS)
    notice = Outgoing("notice", ["triage@example.com"], ["triage@example.com"], from_name=evil,
                      from_address=services.settings.notifications_address,
                      subject="New inbound message: " + parsed.subject, message_id="<m3@example.com>")
    assert_sound(compose.inbound_notice(notice, services), {"from", "to", "subject", "auto-submitted"})


def test_console_logs_show_control_characters_escaped():
    import io

    from connector.log import get_logger, setup_logging
    stream = io.StringIO()
    setup_logging("info", stream=stream, json=False)
    get_logger("test").warning("message.shunted", reason="HeaderParseError: \x1b]0;owned\x07\r\nX-Injected: 1")
    line = stream.getvalue()
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line and "\\u001b]0;owned" in line


def test_what_the_parse_capped_is_in_the_decision(tmp_path):
    from connector.app import open_services
    from connector.pipeline.runner import Runner
    from connector.settings import load_settings
    from connector.store.spool import unsaved_entry
    runner = Runner(open_services(load_settings(Instance(tmp_path, 2500).ini)))
    refs = " ".join(f"<r{i}@acme.example>" for i in range(MAX_REFERENCES + 1)).encode()
    spool = unsaved_entry(mail(headers=b"References: " + refs + b"\n"), rcpt_to=["support@example.com"],
                          intake="test")
    assert f"parse capped: references {MAX_REFERENCES + 1}" in runner.dry_run(spool).summary()["notes"]


def test_a_huge_subject_is_cut_where_we_write_it(daemon, sink):
    from connector.outbound.compose import MAX_SUBJECT_CHARS
    daemon.send(make_mail(subject="big " * 30_000))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    for _, _, raw in sink.messages:
        subject = str(BytesParser(policy=STRICT).parsebytes(header_block(raw) + b"\r\n\r\n")["subject"])
        assert len(subject) == MAX_SUBJECT_CHARS and subject.endswith("…")


def test_bidirectional_overrides_are_shown_not_obeyed(daemon, sink):
    """U+202E makes 'invoice\u202egpj.exe' read as 'invoiceexe.jpg' on a terminal."""
    daemon.send(make_mail(subject="invoice\u202egpj.exe"))
    daemon.wait_processed(1)
    out = daemon.cli("tickets", "list").stdout.decode()
    assert "\u202e" not in out and "invoice\\u202egpj.exe" in out
