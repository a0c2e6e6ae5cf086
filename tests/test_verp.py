"""Attribution of bounces (issue 12): a VERP envelope sender on every mail we
deliver, accepted by the intake only with a valid HMAC; a bounce of our
auto-response attributed by VERP and by the Message-ID in the report, never
answered; the row `bounced`, the ticket's `delivery_failed`, the employees told."""

import smtplib

from conftest import Instance, make_mail, wait_for
from dsn import dsn

VERP_PREFIX = "bounces+"


def _auto_response(instance, sink, sender="ann@acme.example"):
    """A new ticket from `sender`; returns its auto-response as (outbox row, what the relay got)."""
    instance.send(make_mail(subject="Printer broken", sender=sender))
    instance.wait_processed(1)
    instance.wait_delivered()
    row = next(o for o in instance.outbox() if o["kind"] == "auto_response")
    got = wait_for(lambda: [m for m in sink.messages if sender in m[1]], what="auto-response at the relay")
    return row, got[0]


def _rows(instance, sql, *params):
    with instance.connect() as conn:
        return conn.execute(sql, params).fetchall()


def test_verp_codec_accepts_only_its_own_hmac():
    from connector.mail.addresses import OwnAddresses
    from connector.mail.verp import Verp
    verp = Verp(b"k" * 32, "Example.com")
    address = verp.address(42)
    assert address.startswith("bounces+42-") and address.endswith("@example.com")
    assert verp.outbox_id(address) == 42 and verp.outbox_id(address.upper()) == 42
    forged = address.replace("bounces+42-", "bounces+43-")
    assert verp.outbox_id(forged) is None
    assert Verp(b"x" * 32, "example.com").outbox_id(address) is None      # another installation's key
    assert verp.outbox_id(address.replace("example.com", "other.example")) is None
    own = OwnAddresses("support@example.com", "notifications@example.com", verp=verp)
    assert own.is_own(address) and not own.is_own(forged)


def test_every_mail_goes_out_with_a_verp_sender_the_row_keeps_the_planned_one(daemon, sink):
    row, (mail_from, _, _) = _auto_response(daemon, sink)
    assert row["mail_from"] == "support@example.com"        # the row as planned (== replay --dry-run)
    assert mail_from.startswith(f"{VERP_PREFIX}{row['id']}-") and mail_from.endswith("@example.com")
    others = [m for m in sink.messages if m[0] and not m[0].startswith(VERP_PREFIX)]
    assert others == []


def test_intake_accepts_a_valid_verp_address_and_refuses_a_forged_one(daemon, sink):
    _, (mail_from, _, _) = _auto_response(daemon, sink)
    local, _, domain = mail_from.partition("@")
    forged = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"   # one digit of the HMAC changed
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("")
        assert smtp.rcpt(forged)[0] == 550
        assert smtp.rcpt(mail_from)[0] == 250


def test_bounce_to_the_verp_address_is_attributed_and_never_answered(daemon, sink):
    row, (mail_from, _, _) = _auto_response(daemon, sink, sender="gone@acme.example")
    before = len(sink.messages)
    daemon.send(dsn("gone@acme.example"), sender="", rcpts=[mail_from])   # no Message-ID in the report
    daemon.wait_processed(2)
    wait_for(lambda: next(o for o in daemon.outbox() if o["id"] == row["id"])["status"] == "bounced",
             interval=0.3, what="the row bounced")
    bounced = next(o for o in daemon.outbox() if o["id"] == row["id"])
    assert "userunknown" in bounced["blocked"]
    history = daemon.json("tickets", "history", "1")
    failed = [e for e in history if e["event"] == "delivery_failed"]
    assert len(failed) == 1 and failed[0]["detail"]["via"] == "verp" and failed[0]["detail"]["outbox_id"] == row["id"]
    daemon.wait_delivered()
    new = sink.messages[before:]
    assert not [m for m in new if "gone@acme.example" in m[1] or any("mailer-daemon" in r.lower() for r in m[1])]
    notices = [m for m in new if b"Not delivered to gone@acme.example" in m[2]]
    assert notices and {r for m in notices for r in m[1]} == {"jane@example.com", "bob@example.com"}
    assert [i for i in daemon.inbound() if i["reason"] == "bounce"] == []      # attributed: not left for review
    blocks = daemon.json("blocks", "list")
    assert [(b["target"], b["kind"], b["reason"]) for b in blocks] == [("gone@acme.example", "address", "userunknown")]


def test_bounce_is_attributed_by_the_message_id_in_the_report_without_verp(tmp_path, sink):
    instance = Instance(tmp_path, sink.port, outbound__verp="no")
    try:
        instance.start()
        row, (mail_from, _, _) = _auto_response(instance, sink, sender="gone@acme.example")
        assert mail_from == "support@example.com"
        message_id = _rows(instance, "SELECT message_id FROM outbox WHERE id = ?", row["id"])[0][0]
        instance.send(dsn("gone@acme.example", original_message_id=message_id), sender="",
                      rcpts=["support@example.com"])
        instance.wait_processed(2)
        wait_for(lambda: next(o for o in instance.outbox() if o["id"] == row["id"])["status"] == "bounced",
                 interval=0.3, what="the row bounced")
        failed = [e for e in instance.json("tickets", "history", "1") if e["event"] == "delivery_failed"]
        assert failed[0]["detail"]["via"] == "message_id"
    finally:
        instance.stop()


def test_a_bounce_nobody_can_attribute_stays_in_triage(daemon, sink):
    daemon.send(dsn("stranger@acme.example", original_message_id="<not-ours@elsewhere.example>"), sender="",
                rcpts=["support@example.com"])
    daemon.wait_processed(1)
    items = daemon.inbound()
    assert [i["reason"] for i in items] == ["bounce"] and "stranger@acme.example" in items[0]["detail"]
    assert daemon.json("blocks", "list") == []


def test_a_bounce_of_a_notice_tells_nobody(tmp_path, sink):
    instance = Instance(tmp_path, sink.port, connector__triage_notice_to="triage@example.com")
    try:
        instance.start()
        instance.send(make_mail(subject="hi", sender="ann@acme.example", to="notifications@example.com"),
                      rcpts=["notifications@example.com"])
        instance.wait_processed(1)
        instance.wait_delivered()
        notice = wait_for(lambda: [m for m in sink.messages if "triage@example.com" in m[1]], what="notice")[0]
        before = len(sink.messages)
        instance.send(dsn("triage@example.com"), sender="", rcpts=[notice[0]])
        instance.wait_processed(2)
        wait_for(lambda: any(o["status"] == "bounced" for o in instance.outbox()), interval=0.3, what="the notice bounced")
        instance.wait_delivered()
        assert sink.messages[before:] == []
    finally:
        instance.stop()


def test_the_notices_of_a_bounce_are_on_the_ticket_of_the_mail_that_bounced(tmp_path, sink):
    """The bounce is about mail of ticket 1: the employees' "Not delivered" notice and the
    "Our mail was rejected" notice to triage_notice_to are outbox rows of ticket 1
    (`outbox list` showed none)."""
    instance = Instance(tmp_path, sink.port, connector__triage_notice_to="triage@example.com")
    try:
        instance.start()
        _, (mail_from, _, _) = _auto_response(instance, sink, sender="gone@acme.example")
        instance.send(dsn("gone@acme.example"), sender="", rcpts=[mail_from])
        instance.wait_processed(2)
        wait_for(lambda: len([o for o in instance.outbox() if o["kind"] == "notice"]) == 1, interval=0.3,
                 what="the employees' notice")
        notice = next(o for o in instance.outbox() if o["kind"] == "notice")
        assert notice["subject"].startswith("[Ticket #1] Not delivered") and notice["ticket"] == 1
        instance.send(make_mail(subject="Second", sender="ann@acme.example"))
        instance.wait_processed(3)
        instance.wait_delivered()
        second = max(o["id"] for o in instance.outbox() if o["kind"] == "auto_response")
        verp = next(m[0] for m in sink.messages if "ann@acme.example" in m[1])
        assert verp.startswith(f"{VERP_PREFIX}{second}-")
        instance.send(dsn("ann@acme.example", status="5.7.1",
                          diagnostic="554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org"),
                      sender="", rcpts=[verp])
        instance.wait_processed(4)
        rejected = wait_for(lambda: [o for o in instance.outbox() if o["subject"].startswith("Our mail was rejected")],
                            interval=0.3, what="the notice about us")
        assert [(o["rcpt"], o["ticket"]) for o in rejected] == [(["triage@example.com"], 2)]
        with instance.connect() as conn:   # what the loop budgets count: no ticket for the notices
            noticed = conn.execute("select ticket from sent_mail where kind = 'notice'").fetchall()
        assert noticed and all(ticket is None for (ticket,) in noticed), noticed
    finally:
        instance.stop()
