"""Formats mail/bounce.py used to misread (issue 12), each the smallest real-shaped report:
a DSN whose Content-Type a relay mangled, a qmail report of a mail to oneself, a multi-line
SMTP reply that repeats its codes on every line, a text report naming two recipients with
different statuses, a Sendmail transcript refused after DATA beside a pipelined RCPT
refusal, and sisimai's fallbacks (the refused SMTP step, a temporary DNS failure, words no
rule knows, a delay)."""

from connector.mail.automatic import classify
from connector.mail.parse import parse_message

HEAD = ("Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "To: support@example.com\r\nSubject: {subject}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        "Message-ID: <r1@mx.example.net>\r\n")


def report(body, subject="Undelivered Mail Returned to Sender", headers=""):
    raw = HEAD.format(subject=subject) + headers + "\r\n" + body.replace("\n", "\r\n")
    auto = classify(parse_message(raw.encode()))
    assert auto.is_bounce, auto
    return auto.kind, [(r.address, r.status, r.reason) for r in auto.report.recipients]


def test_a_dsn_whose_content_type_is_mangled_is_read_from_its_fields():
    # a relay glued the next header onto the boundary parameter: the parser finds no parts
    headers = ('MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n'
               '\tboundary="B1.1312034771/mx.example.net" Message-Id: <20110730140611.4774E@mx.example.net>\r\n')
    body = ("--B1.1312034771/mx.example.net\nContent-Type: text/plain\n\n<gf@sample.example>: host mx[192.0.2.1]"
            " said: 550\n    Probable Spam (in reply to end of DATA command)\n\n--B1.1312034771/mx.example.net\n"
            "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            "Final-Recipient: rfc822; gf@sample.example\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; 550 Probable Spam\n\n--B1.1312034771/mx.example.net--\n")
    assert report(body, headers=headers) == ("bounce", [("gf@sample.example", "5.0.0", "spamdetected")])


def test_a_qmail_report_of_a_mail_to_oneself_names_the_sender():
    body = ("Hi. This is the qmail-send program at example.com.\nI'm afraid I wasn't able to deliver your "
            "message to the following addresses.\nThis is a permanent error; I've given up.\n\n"
            "<support@example.com>:\n192.0.2.1 does not like recipient.\nRemote host said: 552 Error: disk quota "
            "exceeded\nGiving up on 192.0.2.1.\n\n--- Below this line is a copy of the message.\n")
    assert report(body, "failure notice") == ("bounce", [("support@example.com", "", "mailboxfull")])


def test_a_multi_line_reply_reads_as_one_sentence():
    headers = 'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="X"\r\n'
    body = ("--X\nContent-Type: text/plain\n\nfailed\n\n--X\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; ann@gmail.example\nAction: failed\n"
            "Status: 5.7.1\nDiagnostic-Code: smtp; 550-5.7.1 [192.0.2.9] Messages with multiple\n"
            " 550-5.7.1 addresses in From: header are not accepted. - gsmtp\n\n--X--\n")
    assert report(body, headers=headers) == ("bounce", [("ann@gmail.example", "5.7.1", "notcompliantrfc")])


def test_each_recipient_of_a_text_report_has_its_own_status():
    body = ("This message was created automatically by mail delivery software.\n\nA message that you sent could "
            "not be delivered to one or more of its recipients. This is a permanent error.\n\n"
            "  mike@example.co.jp\n    550 5.2.1 <mike@example.co.jp>... User Unknown\n"
            "  sabi@example.co.jp\n    550 5.2.2 <sabi@example.co.jp>... Mailbox Full\n")
    assert report(body, "Mail delivery failed") == ("bounce", [("mike@example.co.jp", "5.2.1", "userunknown"),
                                                              ("sabi@example.co.jp", "5.2.2", "mailboxfull")])


def _sendmail(transcript):
    return ("   ----- The following addresses had permanent fatal errors -----\n<kim@ntt.example>\n"
            "    (reason: 550 Unknown user kim@ntt.example)\n\n   ----- Transcript of session follows -----\n"
            "... while talking to mx.ntt.example.:\n" + transcript + "\n")


def test_no_such_user_after_data_is_the_recipients_filter_but_a_pipelined_rcpt_is_not():
    after_data = _sendmail(">>> DATA\n<<< 550 Unknown user kim@ntt.example\n554 5.0.0 Service unavailable")
    pipelined = _sendmail(">>> DATA\n<<< 550 5.1.1 <kim@ntt.example>... User Unknown\n"
                          "550 5.1.1 <kim@ntt.example>... User unknown\n<<< 503 Need Rcpt command.")
    assert report(after_data, "Returned mail: see transcript for details")[1][0][2] == "filtered"
    assert report(pipelined, "Returned mail: see transcript for details")[1][0][2] == "userunknown"


def test_when_nothing_says_why_sisimais_fallbacks_decide():
    def one(words, subject="Mail delivery failed"):
        body = "A message that you sent could not be delivered.\n\n  eva@example.org\n    " + words + "\n"
        return report(body, subject)[1][0][2]
    assert one("SMTP error from remote mail server after MAIL FROM:<support@example.com>: 550 nope") == "rejected"
    assert one("SMTP error from remote mail server after initial connection: 554 nope") == "blocked"
    assert one("451 4.4.0 DNS lookup failure: host example.org not found, try again") == "networkerror"
    assert one("550 Computer says no") == "onhold"


def test_a_report_whose_boundary_lines_were_stripped_is_read_from_its_text():
    headers = ('MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n'
               '    boundary="FF00.00000/mx.example.net"\r\n')
    body = ("   ----- The following addresses had permanent fatal errors -----\n<kim@example.net>\n\n"
            "   ----- Transcript of session follows -----\nmail.local: unknown user: kim\n"
            "554 <kim@example.net>... Service unavailable\n\nReporting-MTA: dns; mx.example.net\n\n"
            "Final-Recipient: RFC822; <kim@example.net>\nAction: failed\nStatus: 5.5.0\n")
    assert report(body, "Returned mail: Service unavailable", headers) == (
        "bounce", [("kim@example.net", "5.5.0", "userunknown")])


def test_the_words_decide_the_reason_not_the_address():
    body = ("<spam-reports@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1\n"
            "    <spam-reports@example.org>: Recipient address rejected: User unknown in virtual mailbox table\n"
            "    (in reply to RCPT TO command)\n")
    assert report(body)[1] == [("spam-reports@example.org", "5.1.1", "userunknown")]


def test_a_refusal_at_mail_from_is_of_our_sender_whatever_the_status_hints():
    body = ("<neko@example.ne.jp>: host mail.example.ne.jp[203.0.113.2] said: 550\n"
            "    5.7.1 Access denied (in reply to MAIL FROM command)\n")
    assert report(body)[1] == [("neko@example.ne.jp", "5.7.1", "rejected")]
