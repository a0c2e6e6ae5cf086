"""The cheaper paths of filing and delivery keep their meaning (real SQLite, a real relay on loopback)."""

from connector.outbound.delivery import Delivery
from connector.store import bulk
from connector.store.models import SentMail
from connector.store.queries import outbox_due, sent_since
from relays import Clock, ScriptedRelay, queue, row, store_and_settings


def test_a_budget_count_stops_at_its_limit(tmp_path):
    """Counting every mail of the hour made each auto-response cost more than the one before."""
    store_and_settings(tmp_path, 25)
    bulk.insert_many(SentMail, [{"address": "a@example.com", "domain": "example.com", "ticket": 1,
                                 "kind": "auto_response", "budgeted": True, "at": 1000.0 + i} for i in range(50)])
    assert sent_since(999.0, 10, kind="auto_response") == 10
    assert sent_since(999.0, 100, kind="auto_response") == 50
    assert sent_since(1039.5, 100, address="a@example.com", kind="auto_response") == 10
    assert sent_since(999.0, 100, kind="notice") == 0


def test_due_rows_come_oldest_first_with_their_fields(tmp_path):
    clock = Clock()
    store_and_settings(tmp_path, 25)
    later = queue(["late@example.com"], clock.now + 5)
    first = queue(["jane@example.com", "bob@example.com"], clock.now, mail_from="")
    due = outbox_due(clock.now + 10, 100)
    assert [e.id for e in due] == first + later
    assert (due[0].rcpt, due[0].mail_from, bytes(due[0].raw)) == (["jane@example.com", "bob@example.com"], "",
                                                                  bytes(row(first[0]).raw))
    assert [e.id for e in outbox_due(clock.now, 100)] == first


def test_the_envelope_reaches_the_relay_as_queued(tmp_path):
    """MAIL FROM and RCPT TO are written without smtplib's address parse: the null sender stays <>."""
    relay = ScriptedRelay().start()
    try:
        clock = Clock()
        delivery = Delivery(store_and_settings(tmp_path, relay.port), clock=clock)
        queue(["jane@example.com", "o'brien+desk@example.com"], clock.now, mail_from="")
        queue(["bob@example.com"], clock.now)
        assert delivery.run_once() == 2
        assert [(m[0], m[1]) for m in relay.messages] == [
            ("<>", ["jane@example.com", "o'brien+desk@example.com"]), ("support@example.com", ["bob@example.com"])]
        delivery.close()
    finally:
        relay.stop()
