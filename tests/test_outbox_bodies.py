"""Outgoing mail's bytes in their own table (`outbox_body`, migration 0016_outbox_bodies):
a store from before upgrades keeping every body, and delivery sends what was queued; the
attempts index nothing reads is gone (0016_delivery_attempt_index)."""

import sqlite3

import pytest

from connector.outbound.delivery import NO_BODY, Delivery
from connector.store import outbox
from connector.store.db import open_store
from connector.store.models import database
from relays import Clock, ScriptedRelay, queue, row, store_and_settings


@pytest.fixture
def sink():
    relay = ScriptedRelay().start()
    yield relay
    relay.stop()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_from_before_outbox_bodies_upgrades_and_sends_its_pending_rows_byte_for_byte(tmp_path, sink):
    clock = Clock()
    settings = store_and_settings(tmp_path, sink.port)
    pending = queue(["ann@acme.example"], clock.now, count=2)
    [sent] = queue(["bob@acme.example"], clock.now)
    bodies = {i: outbox.body(i) for i in (*pending, sent)}
    database.close()
    with sqlite3.connect(settings.database) as conn:   # the outbox as main's 0015 left it: the body in the row
        conn.execute('ALTER TABLE "outbox" ADD COLUMN "raw" BLOB NOT NULL DEFAULT x\'\'')
        conn.execute('UPDATE "outbox" SET "raw" = (SELECT "raw" FROM "outbox_body" WHERE "outbox_id" = "outbox"."id")')
        conn.execute('UPDATE "outbox" SET "status" = \'sent\', "sent_at" = 1 WHERE "id" = ?', (sent,))
        conn.execute('DROP TABLE "outbox_body"')
        conn.execute('DELETE FROM "schema_migration" WHERE "name" = ?', ("0016_outbox_bodies",))
    open_store(settings.database)
    with sqlite3.connect(settings.database) as conn:
        assert "raw" not in {r[1] for r in conn.execute('PRAGMA table_info("outbox")')}
    assert {i: outbox.body(i) for i in bodies} == bodies
    delivery = Delivery(settings, clock=clock)
    assert delivery.run_once() == 2
    assert [row(i).status for i in (*pending, sent)] == ["sent", "sent", "sent"]
    assert sorted(content for _, _, content in sink.messages) == sorted(bodies[i] for i in pending)
    delivery.close()


def test_a_due_row_without_its_body_waits_alone_and_nothing_empty_is_sent(tmp_path, sink):
    clock = Clock()
    settings = store_and_settings(tmp_path, sink.port)
    broken, fine = queue(["ann@acme.example"], clock.now, count=2)
    database.execute_sql('DELETE FROM "outbox_body" WHERE "outbox_id" = ?', (broken,))
    delivery = Delivery(settings, clock=clock)
    assert delivery.run_once() == 2
    assert (row(broken).status, row(fine).status) == ("deferred", "sent")
    assert NO_BODY in row(broken).last_error
    assert [content for _, _, content in sink.messages] == [outbox.body(fine)]
    delivery.close()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_an_old_store_loses_the_attempts_index_nothing_reads_as_a_new_store_has_none(tmp_path):
    """0016_delivery_attempt_index: every delivery commit wrote a page of it."""
    from test_migrations import load_old_store
    from test_migrations_indexes import _indexes
    path = load_old_store(tmp_path / "old")
    assert "deliveryattempt_outbox_id" in _indexes(path)   # 9f567d5 had it
    open_store(path).close()
    assert "deliveryattempt_outbox_id" not in _indexes(path)
    open_store(tmp_path / "new" / "connector.db").close()
    assert "deliveryattempt_outbox_id" not in _indexes(tmp_path / "new" / "connector.db")
