"""Blocks of automatic mail (issue 12, seed 002): each bounce reason's block and
its expiry (frozen clock), a later success lifting a hard block, an employee's
reply still going to a blocked address, a rejection about us blocking nobody,
the loop block of a ticket, `blocks list|lift` and `why`, a store from before
the blocks opening."""

import sqlite3
from datetime import datetime

import pytest

from conftest import Instance, make_mail, wait_for
from dsn import dsn

HOUR = 3600
NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path):
    from connector.store.db import open_store
    from connector.store.models import database
    open_store(str(tmp_path / "connector.db"))
    yield
    database.close()


def _seconds(iso):
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize("reason, hours", [("mailboxfull", 3), ("systemfull", 3), ("norelaying", 3),
                                           ("userunknown", 168), ("hostunknown", 168), ("hasmoved", 168),
                                           ("spamdetected", None), ("blocked", None), ("policyviolation", None),
                                           ("expired", None)])
def test_policy_says_how_long_each_reason_blocks(reason, hours):
    from connector.store import blocks
    assert blocks.hours_for(reason, 168) == hours
    assert (reason in blocks.SENDER_PROBLEMS) == (reason in ("spamdetected", "blocked", "policyviolation"))


def test_a_block_expires_at_its_until_and_is_not_doubled(store):
    from connector.store import blocks
    blocks.add("address", "Full@Acme.example", "mailboxfull", "test", NOW, 3)
    assert blocks.active("address", "full@acme.example", NOW + 3 * HOUR - 1) is not None
    assert blocks.active("address", "full@acme.example", NOW + 3 * HOUR) is None
    blocks.add("address", "full@acme.example", "mailboxfull", "again", NOW + HOUR, 3)   # extends, not a second row
    rows = blocks.listing(NOW + HOUR, include_all=True)
    assert len(rows) == 1 and rows[0].until == NOW + 4 * HOUR
    assert blocks.status_of(rows[0], NOW + 4 * HOUR) == "expired"
    assert blocks.listing(NOW + 4 * HOUR) == []


def test_a_ticket_block_stops_every_address_and_lift_ends_it(store):
    from connector.store import blocks
    blocks.add("ticket", 7, "loop", "test", NOW, blocks.LOOP_BLOCK_HOURS)
    assert set(blocks.blocking(["a@x.example", "b@y.example"], 7, NOW + 11 * HOUR)) == {"a@x.example", "b@y.example"}
    assert blocks.blocking(["a@x.example"], 7, NOW + 12 * HOUR) == {}
    assert blocks.blocking(["a@x.example"], 8, NOW) == {}
    assert blocks.lift("#7", NOW + HOUR) == 1 and blocks.blocking(["a@x.example"], 7, NOW + HOUR) == {}


def test_a_success_lifts_a_hard_block_only(store):
    from connector.store import blocks
    blocks.add("address", "gone@acme.example", "userunknown", "t", NOW, 168, hard=True)
    blocks.add("address", "full@acme.example", "mailboxfull", "t", NOW, 3)
    assert blocks.lift_hard(["Gone@acme.example", "full@acme.example"], NOW + 1) == ["gone@acme.example"]
    assert [b.target for b in blocks.listing(NOW + 2)] == ["full@acme.example"]


def _new_ticket_bounced(instance, sink, address, **dsn_args):
    """A new ticket from `address`, its auto-response bounced with `dsn_args` (to the VERP sender)."""
    instance.send(make_mail(subject="Printer broken", sender=address))
    instance.wait_processed(1)
    instance.wait_delivered()
    mail_from = wait_for(lambda: [m for m in sink.messages if address in m[1]], what="auto-response")[0][0]
    instance.send(dsn(address, **dsn_args), sender="", rcpts=[mail_from])
    instance.wait_processed(2)
    instance.wait_delivered()


def test_a_hard_bounce_blocks_automatic_mail_an_employee_reply_still_goes_and_lifts_it(daemon, sink):
    _new_ticket_bounced(daemon, sink, "gone@acme.example")
    block = daemon.json("blocks", "list")[0]
    assert (block["target"], block["reason"], block["status"]) == ("gone@acme.example", "userunknown", "active")
    assert _seconds(block["until"]) - _seconds(block["created_at"]) == 168 * HOUR
    # automatic mail to the blocked address: a suppressed row, nothing sent
    daemon.send(make_mail(subject="Another question", sender="gone@acme.example"))
    daemon.wait_processed(3)
    suppressed = [o for o in daemon.outbox() if o["status"] == "suppressed"]
    assert [(o["kind"], o["rcpt"]) for o in suppressed] == [("auto_response", ["gone@acme.example"])]
    assert "gone@acme.example is blocked" in suppressed[0]["blocked"]
    daemon.wait_delivered()
    assert len([m for m in sink.messages if "gone@acme.example" in m[1]]) == 1   # the first auto-response only
    why = daemon.json("why", "gone@acme.example")
    assert why["block"]["reason"] == "userunknown"
    assert [m["what"] for m in why["mail"]] == ["suppressed", "bounced"]
    # an employee's own reply goes, its row says the address is blocked; the relay's 250 lifts the block
    daemon.send(make_mail(subject="[Ticket #1] Printer broken", sender="jane@example.com"))
    daemon.wait_processed(4)
    daemon.wait_delivered()
    reply = [o for o in daemon.outbox() if o["kind"] == "distribution" and "gone@acme.example" in o["rcpt"]]
    assert reply and reply[0]["status"] == "sent" and "gone@acme.example is blocked" in reply[0]["blocked"]
    assert len([m for m in sink.messages if "gone@acme.example" in m[1]]) == 2
    assert daemon.json("blocks", "list") == []
    assert daemon.json("why", "gone@acme.example")["block"] is None


def test_a_full_mailbox_blocks_the_address_three_hours(daemon, sink):
    _new_ticket_bounced(daemon, sink, "full@acme.example", status="4.2.2", diagnostic="552 4.2.2 Mailbox full")
    block = daemon.json("blocks", "list")[0]
    assert (block["target"], block["reason"]) == ("full@acme.example", "mailboxfull")
    assert _seconds(block["until"]) - _seconds(block["created_at"]) == 3 * HOUR
    assert daemon.cli("blocks", "lift", "full@acme.example").returncode == 0
    assert daemon.json("blocks", "list") == []
    assert daemon.cli("blocks", "lift", "full@acme.example", check=False).returncode == 1


def test_a_rejection_about_us_blocks_nobody_and_tells_triage(tmp_path, sink):
    instance = Instance(tmp_path, sink.port, connector__triage_notice_to="triage@example.com")
    try:
        instance.start()
        _new_ticket_bounced(instance, sink, "ann@acme.example", status="5.7.1",
                            diagnostic="554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org")
        assert instance.json("blocks", "list") == []
        notice = wait_for(lambda: [m for m in sink.messages if "triage@example.com" in m[1]], what="notice")
        assert b"The recipient is not blocked" in notice[0][2]
        assert "bounce.sender_problem" in instance.log.read_text()
    finally:
        instance.stop()


def test_more_than_100_mails_on_a_ticket_in_a_day_block_it_twelve_hours(tmp_path, sink):
    instance = Instance(tmp_path, sink.port, connector__loop_reply_seconds="0")
    try:
        instance.start()
        instance.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
        instance.wait_processed(1)
        instance.wait_delivered()
        with instance.connect() as conn:   # a day of mail on ticket #1
            row = conn.execute("SELECT ticket_id, kind, mail_from, rcpt, raw, created_at FROM outbox").fetchone()
            conn.executemany("INSERT INTO outbox (ticket_id, kind, mail_from, rcpt, \"to\", cc, bcc, subject, "
                             "message_id, raw, status, attempts, next_attempt_at, created_at) VALUES "
                             "(?, ?, ?, ?, '[]', '[]', '[]', 's', '', ?, 'sent', 1, 0, ?)", [row] * 100)
        instance.send(make_mail(subject="[Ticket #1] still broken", sender="ann@acme.example"))
        instance.wait_processed(2)
        block = instance.json("blocks", "list")[0]
        assert (block["target"], block["kind"], block["reason"]) == ("1", "ticket", "loop")
        assert _seconds(block["until"]) - _seconds(block["created_at"]) == 12 * HOUR
        copies = [o for o in instance.outbox() if o["kind"] == "distribution" and "still broken" in o["subject"]]
        assert copies and all("ticket #1 is blocked" in o["blocked"] for o in copies)   # a person's mail: goes
    finally:
        instance.stop()


def test_bounce_storm_blocks_and_sends_no_mail(daemon, sink):
    """500 bounces: 250 copies of the bounce of one auto-response (to its VERP address) and 250
    backscatter for mail we never sent. One block, one notice per employee, nothing else out."""
    import smtplib
    _new_ticket_bounced(daemon, sink, "gone@acme.example")
    after_first = len(sink.messages)
    verp = next(m[0] for m in sink.messages if "gone@acme.example" in m[1])
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as smtp:
        for n in range(500):
            if n % 2:
                smtp.sendmail("", [verp], dsn("gone@acme.example"))
            else:
                smtp.sendmail("", ["support@example.com"],
                              dsn(f"victim{n}@elsewhere.example", original_message_id=f"<forged{n}@spam.example>"))
    daemon.wait_processed(502, timeout=120)
    daemon.wait_delivered()
    assert sink.messages[after_first:] == []
    assert [b["target"] for b in daemon.json("blocks", "list")] == ["gone@acme.example"]
    failed = [e for e in daemon.json("tickets", "history", "1") if e["event"] == "delivery_failed"]
    assert len(failed) == 1
    assert len([i for i in daemon.inbound() if i["reason"] == "bounce"]) == 250


def test_a_store_from_before_blocks_opens_and_its_rows_keep(tmp_path):
    """The old release's store (tests/data, see test_migrations.py) gains the block table and the outbox note."""
    from test_migrations import load_old_store
    from connector.store import blocks, migrations
    from connector.store.db import open_store
    from connector.store.models import OutboxEntry, database
    path = load_old_store(tmp_path / "var")
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    open_store(str(path))
    try:
        assert "blocked" in migrations._columns(database, "outbox")
        assert migrations.status(database)["pending"] == []
        assert OutboxEntry.select().count() == before and before > 0
        blocks.add("address", "a@b.example", "userunknown", "t", NOW, 1)
        assert blocks.active("address", "a@b.example", NOW) is not None
    finally:
        database.close()
