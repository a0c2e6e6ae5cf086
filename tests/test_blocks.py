"""Blocks of automatic mail (issue 12, seed 002): each bounce reason's block and
its expiry (frozen clock in the store, an injected one through the daemon), a
later success lifting a hard block, an employee's reply still going to a
blocked address, a rejection about us blocking nobody, the loop block of a
ticket, auto-emails stopped and let go again like the auto-response, `blocks
list|lift` and `why`, a bounce storm, a store from before the blocks opening."""

import sqlite3
import time
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
            row = conn.execute("SELECT ticket_id, kind, mail_from, rcpt, created_at FROM outbox").fetchone()
            conn.executemany("INSERT INTO outbox (ticket_id, kind, mail_from, rcpt, \"to\", cc, bcc, subject, "
                             "message_id, status, attempts, next_attempt_at, created_at) VALUES "
                             "(?, ?, ?, ?, '[]', '[]', '[]', 's', '', 'sent', 1, 0, ?)", [row] * 100)
        instance.send(make_mail(subject="[Ticket #1] still broken", sender="ann@acme.example"))
        instance.wait_processed(2)
        block = instance.json("blocks", "list")[0]
        assert (block["target"], block["kind"], block["reason"]) == ("1", "ticket", "loop")
        assert _seconds(block["until"]) - _seconds(block["created_at"]) == 12 * HOUR
        copies = [o for o in instance.outbox() if o["kind"] == "distribution" and "still broken" in o["subject"]]
        assert copies and all("ticket #1 is blocked" in o["blocked"] for o in copies)   # a person's mail: goes
        # 12 hours on (and the day's mail of the ticket aged out too): the ticket is free again
        _expire(instance)
        with instance.connect() as conn:
            conn.execute("UPDATE outbox SET created_at = created_at - 86400")
        assert [b["status"] for b in instance.json("blocks", "list", "--all")] == ["expired"]
        instance.send(make_mail(subject="[Ticket #1] fixed now?", sender="ann@acme.example"))
        instance.wait_processed(3)
        copies = [o for o in instance.outbox() if o["kind"] == "distribution" and "fixed now" in o["subject"]]
        assert copies and all(o["blocked"] is None for o in copies)
        assert instance.json("blocks", "list") == []
    finally:
        instance.stop()


STATUS_AUTO_EMAILS_YAML = """\
auto_emails:
  - {name: status, event: status_changed, to: [requester], template: ticket_forwarded.txt.j2}
  - {name: failed, event: delivery_failed, to: [requester, manager], template: ticket_forwarded.txt.j2}
"""


def _expire(instance):
    """What the clock passing the blocks' expiry does: their `until` is now in the past."""
    with instance.connect() as conn:
        conn.execute('UPDATE "block" SET until = ? WHERE status = \'active\'', (time.time() - 1,))


def _status_mail(instance, number, status):
    """The auto-email of a `tickets set --status` (the CLI's event) to the requester: its outbox row."""
    instance.cli("tickets", "set", str(number), "--status", status)
    instance.wait_delivered()
    return [o for o in instance.outbox() if o["kind"] == "auto_email" and o["subject"].find(f"#{number}") >= 0][-1]


@pytest.mark.parametrize("status, diagnostic, reason, hours", [
    ("5.2.2", "552 5.2.2 Mailbox full", "mailboxfull", 3),
    ("4.3.1", "452 4.3.1 Insufficient system storage", "systemfull", 3),
    ("5.7.1", "550 5.7.1 Unable to relay for {address}", "norelaying", 3),
    ("5.1.1", "550 5.1.1 <{address}>: Recipient address rejected: User unknown", "userunknown", 168),
    ("5.1.2", "550 5.1.2 Host unknown", "hostunknown", 168),
], ids=lambda v: v if isinstance(v, str) and v.isalpha() else None)
def test_each_block_stops_automatic_mail_until_it_expires(instance, sink, status, diagnostic, reason, hours):
    instance.path.joinpath("config", "auto_emails.yaml").write_text(STATUS_AUTO_EMAILS_YAML)
    instance.start()
    address = f"{reason}@acme.example"
    _new_ticket_bounced(instance, sink, address, status=status, diagnostic=diagnostic)
    [block] = instance.json("blocks", "list")
    assert (block["target"], block["reason"]) == (address, reason)
    assert _seconds(block["until"]) - _seconds(block["created_at"]) == hours * HOUR
    sent = len(sink.messages)
    # blocked: the auto-email of a CLI event and a new ticket's auto-response are suppressed rows
    assert _status_mail(instance, 1, "Open")["status"] == "suppressed"
    instance.send(make_mail(subject="Another one", sender=address))
    instance.wait_processed(3)
    instance.wait_delivered()
    assert [o["status"] for o in instance.outbox() if o["kind"] == "auto_response"] == ["bounced", "suppressed"]
    assert sink.to(address) == [m for m in sink.messages[:sent] if address in m[1]]
    # the expiry passes: the block is expired, and automatic mail goes again
    _expire(instance)
    assert instance.json("blocks", "list") == []
    assert [b["status"] for b in instance.json("blocks", "list", "--all")] == ["expired"]
    assert _status_mail(instance, 1, "Closed")["status"] == "sent"
    instance.send(make_mail(subject="A third one", sender=address))
    instance.wait_processed(4)
    instance.wait_delivered()
    assert [o["status"] for o in instance.outbox() if o["kind"] == "auto_response"][-1] == "sent"
    assert [m["what"] for m in instance.json("why", address)["mail"]][:4] == ["sent", "sent", "suppressed",
                                                                               "suppressed"]


def test_bounce_storm_blocks_and_sends_no_mail(instance, sink):
    """500 bounces: 250 copies of the bounce of one auto-response (to its VERP address) and 250
    backscatter for mail we never sent. One block, one notice per employee, one auto-email of
    `delivery_failed` to the manager, nothing else out."""
    import smtplib
    instance.path.joinpath("config", "auto_emails.yaml").write_text(STATUS_AUTO_EMAILS_YAML)
    daemon = instance.start()
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
    assert [(o["rcpt"], o["status"]) for o in daemon.outbox() if o["kind"] == "auto_email"] == [
        (["jane@example.com"], "sent")]
    assert len([i for i in daemon.inbound() if i["reason"] == "bounce"]) == 250


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
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
