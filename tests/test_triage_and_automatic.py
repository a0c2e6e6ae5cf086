"""Seed 000 triage and automatic mail (never answered, never a ticket for a bounce)."""

from conftest import make_mail

BOUNCE = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.acme.example>
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce1@mx.acme.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.example

Final-Recipient: rfc822; gone@acme.example
Action: failed
Status: 5.1.1

--B--
"""


def test_triage_reasons(daemon, sink):
    daemon.send(make_mail(subject="Hello there", to="notifications@example.com", sender="ann@acme.example"),
                rcpts=["notifications@example.com"])
    daemon.send(make_mail(subject="[Ticket #999] Where is it", sender="ann@acme.example"))
    daemon.send(make_mail(subject="First", sender="ann@acme.example"))
    daemon.wait_processed(3)
    daemon.send(make_mail(subject="Re: [Ticket #1] First", sender="stranger@evil.example"))
    daemon.send(make_mail(subject="A staff note without a ticket", sender="jane@example.com"))
    daemon.wait_processed(5)
    items = daemon.inbound()
    reasons = {i["reason"]: i for i in items}
    assert set(reasons) == {"notifications_address", "unknown_ticket", "unknown_sender", "staff_without_ticket"}
    assert all(i["status"] == "awaiting_review" for i in items)
    assert reasons["unknown_ticket"]["ticket"] == 999
    assert reasons["unknown_sender"]["ticket"] == 1 and reasons["unknown_sender"]["from"] == "stranger@evil.example"
    assert daemon.ticket(1)["message_count"] == 2          # the stranger's mail was not appended
    assert len(daemon.tickets()) == 1


def test_bounce_goes_to_triage_and_is_never_answered(daemon, sink):
    daemon.send(BOUNCE, "", ["support@example.com"])
    daemon.wait_processed(1)
    assert daemon.tickets() == []
    assert [(i["reason"], i["status"]) for i in daemon.inbound()] == [("bounce", "awaiting_review")]
    assert daemon.outbox() == []


def test_automatic_mail_is_never_answered(daemon, sink):
    variants = [
        {"headers": {"Auto-Submitted": "auto-replied"}},
        {"headers": {"Precedence": "bulk"}},
        {"headers": {"X-Autoreply": "yes"}},
        {"headers": {"List-Id": "<news.acme.example>"}},
        {"sender": "postmaster@acme.example"},
    ]
    for index, variant in enumerate(variants):
        msg = make_mail(subject=f"Out of office {index}", sender=variant.get("sender", "ann@acme.example"),
                        headers=variant.get("headers"))
        daemon.send(msg)
    daemon.send(make_mail(subject="Null path"), sender="", rcpts=["support@example.com"])
    daemon.wait_processed(6)
    assert [row[2] for row in daemon.spool_states()] == ["ignored_automatic"] * 6
    assert daemon.outbox() == [] and sink.messages == []
    assert {i["status"] for i in daemon.inbound()} == {"closed"}
    # Auto-Submitted: no is a person's mail.
    daemon.send(make_mail(subject="Human", headers={"Auto-Submitted": "no"}))
    daemon.wait_processed(7)
    assert daemon.spool_states()[-1][2] == "new_ticket"


def test_auto_reply_on_a_ticket_is_filed_but_not_distributed(daemon, sink):
    daemon.send(make_mail(subject="Broken mouse"))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    before = len(sink.messages)
    daemon.send(make_mail(subject="Re: [Ticket #1] Broken mouse", headers={"Auto-Submitted": "auto-replied"}))
    daemon.wait_processed(2)
    assert daemon.spool_states()[-1][2] == "follow_up"
    assert daemon.ticket(1)["message_count"] == 3
    assert len(daemon.outbox()) == before                   # nothing new queued
    assert daemon.ticket(1)["messages"][-1]["public"] is True   # the customer's own out-of-office
    daemon.send(make_mail(subject="Re: [Ticket #1] Broken mouse", sender="jane@example.com",
                          headers={"Auto-Submitted": "auto-replied"}))
    daemon.wait_processed(3)
    last = daemon.ticket(1)["messages"][-1]
    assert last["from"] == "jane@example.com" and last["public"] is False   # staff OOO: no customer history
    assert len(daemon.outbox()) == before


def test_our_own_mail_coming_back_is_a_loop(daemon, sink):
    msg = make_mail(subject="Looping", sender="support@example.com", headers={"X-Loop": "support@example.com"})
    daemon.send(msg)
    daemon.wait_processed(1)
    assert daemon.spool_states()[-1][2] == "ignored_automatic"
    assert daemon.outbox() == []


def test_inbound_notice_for_triage_but_never_for_bounces(tmp_path, sink):
    from email import message_from_bytes, policy

    from conftest import Instance
    inst = Instance(tmp_path, sink.port, connector__triage_notice_to="desk@example.com, lead@example.com").start()
    try:
        inst.send(make_mail(subject="[Ticket #42] Who am I", sender="stranger@evil.example"))
        inst.send(BOUNCE, "", ["support@example.com"])
        inst.wait_processed(2)
        inst.wait_delivered()
        assert [o["kind"] for o in inst.outbox()] == ["notice"]        # one notice: not for the bounce
        _, rcpts, raw = sink.messages[0]
        assert sorted(rcpts) == ["desk@example.com", "lead@example.com"]
        notice = message_from_bytes(raw, policy=policy.default)
        assert notice["From"].addresses[0].addr_spec == "notifications@example.com"
        assert notice["Auto-Submitted"] == "auto-generated"
        assert "unknown_ticket" in notice["Subject"] and "Who am I" in notice["Subject"]
        assert "stranger@evil.example" in notice.get_content()
    finally:
        inst.stop()


def test_x_auto_response_suppress_files_a_ticket_without_answering(daemon, sink):
    daemon.send(make_mail(subject="Sent by a rule", headers={"X-Auto-Response-Suppress": "All"}))
    daemon.wait_processed(1)
    daemon.wait_delivered()
    assert daemon.spool_states()[-1][2] == "new_ticket"
    assert sink.to("ann@acme.example") == []                     # Exchange asked: no automatic answer
    assert [o["kind"] for o in daemon.outbox()] == ["distribution"]


def test_sender_without_a_domain_is_triaged_never_answered(daemon, sink):
    """'From: Hans' names nobody we could write to: no ticket, no auto-response to 'hans'."""
    raw = b"From: Hans\r\nTo: support@example.com\r\nSubject: help\r\nMessage-ID: <nodomain@x>\r\n\r\nhi\r\n"
    daemon.send(raw, "hans@acme.example", ["support@example.com"])
    daemon.wait_processed(1)
    assert daemon.tickets() == []
    assert [(i["reason"], i["status"]) for i in daemon.inbound()] == [("unknown_sender", "awaiting_review")]
    assert daemon.outbox() == []


def test_ticket_number_too_large_for_the_store_is_an_unknown_ticket(daemon, sink):
    """A tag with a number SQLite cannot hold is a reference to a ticket that does not exist,
    not a processing error (and `replay --dry-run` does not crash on it)."""
    msg = make_mail(subject="Re: [Ticket #99999999999999999999999] hello", sender="ann@acme.example")
    path = daemon.path / "huge.eml"
    path.write_bytes(msg.as_bytes())
    result = daemon.cli("replay", "--dry-run", "--json", str(path))
    assert '"unknown_ticket"' in result.stdout.decode()
    daemon.send(msg)
    daemon.wait_processed(1)
    assert [(i["reason"], i["status"]) for i in daemon.inbound()] == [("unknown_ticket", "awaiting_review")]
