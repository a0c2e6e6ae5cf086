"""Delivery, row by row and recipient by recipient, against a real relay on loopback.

Each test fails on the code before per-row, per-recipient delivery: a 450 for
one recipient was recorded as sent, an odd address raised out of the whole
batch, and a fault in one row rolled back the outcomes of all.
"""

import pytest

from connector.outbound.delivery import Delivery
from conftest import free_port
from relays import Clock, ScriptedRelay, queue, row, store_and_settings


@pytest.fixture
def clock():
    return Clock()


def delivery_for(tmp_path, relay, clock, **outbound):
    return Delivery(store_and_settings(tmp_path, relay.port, **outbound), clock=clock)


@pytest.fixture
def relay():
    relays = []

    def start(**kwargs):
        relays.append(ScriptedRelay(**kwargs).start())
        return relays[-1]
    yield start
    for r in relays:
        r.stop()


def test_temporary_refusal_of_one_recipient_is_retried_for_that_recipient_alone(tmp_path, relay, clock):
    sink = relay(replies={"bob@example.com": ["450 4.2.1 Mailbox busy, try later"]})
    delivery = delivery_for(tmp_path, sink, clock)
    [entry_id] = queue(["jane@example.com", "bob@example.com"], clock.now)

    assert delivery.run_once() == 1
    entry = row(entry_id)
    assert entry.status == "deferred"
    assert entry.last_error == "bob@example.com: 450 4.2.1 Mailbox busy, try later"
    assert {a: s["state"] for a, s in entry.recipients.items()} == {"jane@example.com": "accepted",
                                                                    "bob@example.com": "deferred"}
    assert [m[1] for m in sink.messages] == [["jane@example.com"]]

    assert delivery.run_once() == 0          # not due before its backoff
    clock.now += 10
    assert delivery.run_once() == 1
    entry = row(entry_id)
    assert (entry.status, entry.attempts, entry.last_error) == ("sent", 2, None)
    assert [m[1] for m in sink.messages] == [["jane@example.com"], ["bob@example.com"]]
    delivery.close()


def test_too_many_recipients_loses_nobody_and_sends_nobody_twice(tmp_path, relay, clock):
    sink = relay(max_rcpts=2)
    delivery = delivery_for(tmp_path, sink, clock)
    rcpt = [f"user{i}@example.com" for i in range(5)]
    [entry_id] = queue(rcpt, clock.now)
    for _ in range(5):
        delivery.run_once()
        clock.now += 60
    assert row(entry_id).status == "sent"
    assert [len(m[1]) for m in sink.messages] == [2, 2, 1]
    assert sink.rcpt_counts() == dict.fromkeys(rcpt, 1)
    delivery.close()


def test_permanent_refusal_is_recorded_on_the_row_as_text(tmp_path, relay, clock):
    sink = relay(replies={"bob@example.com": ["550 5.1.1 <bob@example.com>: Recipient address rejected"]})
    delivery = delivery_for(tmp_path, sink, clock)
    [entry_id] = queue(["jane@example.com", "bob@example.com"], clock.now)
    delivery.run_once()
    clock.now += 3600
    delivery.run_once()
    entry = row(entry_id)
    assert (entry.status, entry.attempts) == ("sent", 1)
    assert entry.recipients["bob@example.com"]["state"] == "refused"
    assert entry.last_error == "bob@example.com: 550 5.1.1 <bob@example.com>: Recipient address rejected"
    assert "b'" not in entry.delivery_attempts[0].detail
    assert sink.rcpt_counts() == {"jane@example.com": 1}
    delivery.close()


def test_every_recipient_refused_fails_the_row_and_the_session_goes_on(tmp_path, relay, clock):
    sink = relay(replies={"nobody@example.com": ["550 5.1.1 no such user"]})
    delivery = delivery_for(tmp_path, sink, clock)
    failed, sent = queue(["nobody@example.com"], clock.now) + queue(["ann@acme.example"], clock.now)
    assert delivery.run_once() == 2
    assert (row(failed).status, row(sent).status) == ("failed", "sent")   # no 503 nested MAIL for the next
    assert sink.rcpt_counts() == {"ann@acme.example": 1}
    delivery.close()


def test_unicode_address_without_smtputf8_fails_alone_with_a_clear_reason(tmp_path, relay, clock):
    sink = relay()  # does not offer SMTPUTF8
    delivery = delivery_for(tmp_path, sink, clock)
    ids = queue(["ann@acme.example"], clock.now) + queue(["jöran@acme.example"], clock.now) \
        + queue(["bea@acme.example"], clock.now)
    assert delivery.run_once() == 3
    assert [row(i).status for i in ids] == ["sent", "failed", "sent"]
    assert row(ids[1]).last_error == (f"jöran@acme.example: 550 5.6.7 SMTPUTF8 is required for jöran@acme.example, "
                                      f"but relay 127.0.0.1:{sink.port} does not offer it")
    assert sink.rcpt_counts() == {"ann@acme.example": 1, "bea@acme.example": 1}
    delivery.close()


def test_unicode_address_goes_with_smtputf8_when_the_relay_offers_it(tmp_path, relay, clock):
    sink = relay(enable_SMTPUTF8=True)
    delivery = delivery_for(tmp_path, sink, clock)
    [entry_id] = queue(["jöran@acme.example", "ann@acme.example"], clock.now)
    delivery.run_once()
    assert row(entry_id).status == "sent"
    assert sink.messages[0][1] == ["jöran@acme.example", "ann@acme.example"]
    assert "SMTPUTF8" in sink.mail_options[0]
    delivery.close()


def test_address_with_a_line_break_is_refused_not_sent(tmp_path, relay, clock):
    sink = relay()
    delivery = delivery_for(tmp_path, sink, clock)
    # smtplib would send the line break as is: a second command smuggled into RCPT
    odd, fine = queue(["evil@acme.example>\r\nRCPT TO:<x@example.com", "ann@acme.example"], clock.now) \
        + queue(["bea@acme.example"], clock.now)
    assert delivery.run_once() == 2
    assert row(odd).status == "sent"
    assert row(odd).recipients["evil@acme.example>\r\nRCPT TO:<x@example.com"]["state"] == "refused"
    assert row(fine).status == "sent"
    assert sink.rcpt_counts() == {"ann@acme.example": 1, "bea@acme.example": 1}
    delivery.close()


def test_session_the_relay_closed_is_replaced_without_deferring(tmp_path, relay, clock):
    sink = relay(mail_replies=[None, "421 4.4.2 Error: timeout exceeded"])
    delivery = delivery_for(tmp_path, sink, clock)
    ids = queue(["ann@acme.example"], clock.now, count=2)
    assert delivery.run_once() == 2
    assert [(row(i).status, row(i).attempts) for i in ids] == [("sent", 1), ("sent", 1)]
    assert len({id(s) for s in sink.sessions}) == 2      # a new session for the second mail
    delivery.close()


def test_relay_down_delays_every_row_and_loses_none(tmp_path, clock):
    port = free_port()
    sink = ScriptedRelay(port=port)            # not started yet: the relay is down
    delivery = Delivery(store_and_settings(tmp_path, port), clock=clock)
    ids = queue(["ann@acme.example"], clock.now, count=3)
    assert delivery.run_once() == 1          # one row tried; the others wait for the relay
    assert delivery.run_once() == 0
    assert [row(i).status for i in ids] == ["deferred", "pending", "pending"]
    assert "Connection refused" in row(ids[0]).last_error
    sink.start()
    try:
        clock.now += 10
        assert delivery.run_once() == 3
        assert [row(i).status for i in ids] == ["sent"] * 3
    finally:
        sink.stop()
        delivery.close()


def test_given_up_after_give_up_after(tmp_path, relay, clock):
    sink = relay(replies={"bob@example.com": ["451 4.3.0 try later"] * 5})
    delivery = delivery_for(tmp_path, sink, clock, give_up_after="15")
    [entry_id] = queue(["bob@example.com"], clock.now)
    delivery.run_once()
    clock.now += 20
    delivery.run_once()
    entry = row(entry_id)
    assert (entry.status, entry.attempts) == ("failed", 2)
    assert entry.last_error == "bob@example.com: not delivered within give_up_after (15 s): 451 4.3.0 try later"
    delivery.close()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_store_from_before_per_recipient_state_opens_and_delivers(tmp_path, relay, clock):
    import sqlite3

    from connector.store.db import open_store
    sink = relay()
    settings = store_and_settings(tmp_path, sink.port)
    [entry_id] = queue(["ann@acme.example"], clock.now)
    database_path = settings.database
    from connector.store.models import database
    database.close()
    with sqlite3.connect(database_path) as conn:   # the outbox as it was released
        conn.execute('ALTER TABLE "outbox" DROP COLUMN "recipients"')
        conn.execute('ALTER TABLE "outbox" DROP COLUMN "queued_at"')
        conn.execute('DELETE FROM "schema_migration" WHERE "name" = ?', ("0002_outbox_recipient_state",))
    open_store(database_path)
    delivery = Delivery(settings, clock=clock)
    assert delivery.run_once() == 1
    assert row(entry_id).status == "sent"
    assert sink.rcpt_counts() == {"ann@acme.example": 1}
    delivery.close()


def test_cancel_while_in_flight_is_not_undone(tmp_path, relay, clock):
    from connector.outbound.control import cancel

    class CancellingRelay(ScriptedRelay):
        class Handler(ScriptedRelay.Handler):
            async def handle_DATA(self, server, session, envelope):
                cancel(self.sink.entry_id)               # the operator, while the relay has the mail
                return "451 4.3.0 try again later"

    sink = CancellingRelay().start()
    try:
        delivery = delivery_for(tmp_path, sink, clock)
        [sink.entry_id] = queue(["ann@acme.example"], clock.now)
        assert delivery.run_once() == 1
        entry = row(sink.entry_id)
        assert (entry.status, entry.attempts) == ("cancelled", 1)
        assert entry.last_error == "ann@acme.example: 451 4.3.0 try again later"
        clock.now += 3600
        assert delivery.run_once() == 0
    finally:
        sink.stop()


@pytest.mark.sqlite_only("an SQLite file lock")
def test_an_outcome_the_store_refuses_is_recorded_before_anything_is_sent_again(tmp_path, relay, clock):
    """The relay accepted; the store was locked by another writer past the busy timeout. The
    next rounds send nothing until that outcome is on the row: the mail arrives once."""
    import sqlite3

    import peewee

    from connector.store.models import database
    sink = relay()
    delivery = delivery_for(tmp_path, sink, clock)
    [first, second] = queue(["jane@example.com"], clock.now) + queue(["bob@example.com"], clock.now)
    database.execute_sql("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(tmp_path / "var" / "connector.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")          # another process holds the main file's write lock
    with pytest.raises(peewee.OperationalError, match="locked"):
        delivery.run_once()
    with pytest.raises(peewee.OperationalError, match="locked"):
        delivery.run_once()                    # still locked: the outcome waits, nothing is sent
    assert [m[1] for m in sink.messages] == [["jane@example.com"]]
    other.execute("ROLLBACK")
    delivery.run_once()
    assert (row(first).status, row(second).status) == ("sent", "sent")
    assert sink.rcpt_counts() == {"jane@example.com": 1, "bob@example.com": 1}
    delivery.close()
