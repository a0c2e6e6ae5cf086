"""The cheaper paths of filing and delivery keep their meaning (real SQLite, a real relay on loopback)."""

import types

import pytest
from aiosmtpd.smtp import SMTP

from connector.intake.smtp import IntakeSMTP
from connector.mail import verp
from connector.outbound.delivery import Delivery
from connector.store import bulk, outbox
from connector.store.models import SentMail
from connector.store.queries import sent_since
from relays import Clock, ScriptedRelay, queue, store_and_settings


def test_a_budget_count_stops_at_its_limit(tmp_path):
    """Counting every mail of the hour made each auto-response cost more than the one before."""
    store_and_settings(tmp_path, 25)
    bulk.insert_many(SentMail, [{"address": "a@example.com", "domain": "example.com", "ticket": 1,
                                 "kind": "auto_response", "budgeted": True, "at": 1000.0 + i} for i in range(50)])
    assert sent_since(999.0, 10, kind="auto_response") == 10
    assert sent_since(999.0, 100, kind="auto_response") == 50
    assert sent_since(1039.5, 100, address="a@example.com", kind="auto_response") == 10
    assert sent_since(999.0, 100, kind="notice") == 0
    assert sent_since(999.0, kind="auto_response") == 50   # no bound: every row


def test_due_rows_come_oldest_first_with_their_fields(tmp_path):
    clock = Clock()
    store_and_settings(tmp_path, 25)
    later = queue(["late@example.com"], clock.now + 5)
    first = queue(["jane@example.com", "bob@example.com"], clock.now, mail_from="")
    due = outbox.due(clock.now + 10, 100)
    assert [e.id for e in due] == first + later
    assert (due[0].rcpt, due[0].mail_from, due[0].recipients) == (["jane@example.com", "bob@example.com"], "", None)
    assert outbox.sendable(first[0]) == (True, outbox.body(first[0])) and outbox.body(first[0]).startswith(b"From:")
    assert [e.id for e in outbox.due(clock.now, 100)] == first


def test_the_envelope_reaches_the_relay_as_queued(tmp_path):
    """MAIL FROM and RCPT TO are written without smtplib's address parse: the null sender stays <>."""
    relay = ScriptedRelay().start()
    try:
        clock = Clock()
        settings = store_and_settings(tmp_path, relay.port)
        delivery = Delivery(settings, clock=clock)
        queue(["jane@example.com", "o'brien+desk@example.com"], clock.now, mail_from="")
        second = queue(["bob@example.com"], clock.now)[0]
        assert delivery.run_once() == 2
        assert [(m[0], m[1]) for m in relay.messages] == [   # the null sender stays null; others are VERP (issue 12)
            ("<>", ["jane@example.com", "o'brien+desk@example.com"]),
            (verp.of(settings).address(second), ["bob@example.com"])]
        delivery.close()
    finally:
        relay.stop()


@pytest.mark.parametrize("limit", [0, 8])
def test_the_intake_reads_envelope_addresses_as_aiosmtpd_does(limit):
    """The intake's `_getaddr` drops aiosmtpd's per-call class definition, nothing else."""
    holder = types.SimpleNamespace(local_part_limit=limit)
    for arg in ["", "<>", "<jane@example.com>", "<jane@example.com> SIZE=100 BODY=8BITMIME", "jane@example.com",
                '<"jane doe"@example.com>', "<@relay.example:jane@example.com>", "<jane@[192.0.2.1]>",
                "<a-very-long-local-part@example.com>", "<jane@", "jane", "<<jane@example.com>>", "<jöran@例え.jp>",
                "  <jane@example.com>", "<jane(comment)@example.com>"]:
        assert outcome(IntakeSMTP._getaddr, holder, arg) == outcome(SMTP._getaddr, holder, arg), arg


def outcome(function, *args):
    try:
        return function(*args)
    except Exception as exc:  # the stdlib parser raises on some input: it must raise the same
        return type(exc)


@pytest.mark.sqlite_only("SQLite's WAL and its checkpoints")
def test_the_filing_worker_leaves_checkpoints_to_delivery(tmp_path):
    from connector.store.db import open_store
    from connector.store.models import database
    from connector.worker import DeliveryWorker, FilingWorker
    open_store(tmp_path / "c.db", "normal", checkpoint_pages=FilingWorker.checkpoint_pages)
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == FilingWorker.checkpoint_pages > 1000
    open_store(tmp_path / "c.db", "normal", checkpoint_pages=DeliveryWorker.checkpoint_pages)
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


@pytest.mark.sqlite_only("SQLite's WAL and its checkpoints")
def test_the_spool_is_checkpointed_soon_after_the_commits(tmp_path):
    """The intake's spool writer copies the WAL into the spool file once DATA stops coming
    (and, under load, between two batches: tests/test_smtp_intake_spool.py)."""
    import asyncio
    import time

    from connector.store.db import open_store, spool_path
    from connector.store.spool import GroupCommitter
    open_store(tmp_path / "c.db")
    committer = GroupCommitter()
    body = b"Subject: x\r\n\r\n" + b"x" * 4096

    async def submit():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(committer.submit(loop, body, mail_from="a@example.com",
                                                       rcpt_to=["support@example.com"], intake="smtp")
                                      for _ in range(50)))
    try:
        assert len(set(asyncio.run(submit()))) == 50
        deadline = time.monotonic() + 10
        while spool_path(tmp_path / "c.db").stat().st_size < 50 * 4096 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool_path(tmp_path / "c.db").stat().st_size >= 50 * 4096
    finally:
        committer.close()


def test_an_insert_statement_is_built_once(tmp_path, monkeypatch):
    """The cache was keyed by the primary key's name for inserts, so every insert built its SQL anew."""
    store_and_settings(tmp_path, 25)
    built = []
    real = bulk.dialect.insert_verb
    monkeypatch.setattr(bulk, "_SQL", {})
    monkeypatch.setattr(bulk.dialect, "insert_verb", lambda kind: built.append(kind) or real(kind))
    rows = [{"address": f"{i}@example.com", "domain": "example.com", "ticket": 1, "kind": "notice",
             "budgeted": False, "at": 1000.0 + i} for i in range(3)]
    for row_ in rows:
        bulk.insert(SentMail, **row_)
    bulk.insert_many(SentMail, rows)
    bulk.insert_many(SentMail, rows)
    assert built == ["insert"]   # once per (statement, columns), whatever the number of calls
    assert sent_since(999.0, kind="notice") == 9
