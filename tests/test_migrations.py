"""Schema migrations: a store written before a column existed opens and keeps its data."""

import sqlite3

from connector.store import migrations
from connector.store.db import open_store


def test_new_store_records_every_migration(tmp_path):
    db = open_store(tmp_path / "c.db")
    assert migrations.status(db) == {"version": len(migrations.MIGRATIONS),
                                     "latest": len(migrations.MIGRATIONS), "pending": []}


def test_added_column_reaches_an_old_store_and_keeps_rows(tmp_path, monkeypatch):
    path = tmp_path / "c.db"
    db = open_store(path)
    db.execute_sql('INSERT INTO "contact" ("email", "name", "created_at") VALUES (?, ?, ?)',
                   ("ann@acme.example", "Ann", 1.0))
    db.close()

    def add_nickname(db):
        migrations.add_column(db, "contact", "nickname", "TEXT")

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + (("9999_nickname", add_nickname),))
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    db.close()
    rows = sqlite3.connect(path).execute('SELECT "email", "name", "nickname" FROM "contact"').fetchall()
    assert rows == [("ann@acme.example", "Ann", None)]


def test_sent_mail_reaches_an_old_store_with_the_last_hour_of_auto_responses(tmp_path):
    """A store from before `sent_mail`: the table appears, and the last hour's auto-responses
    (a non-ASCII address too, which the old JSON comparison never counted) still count."""
    import json
    import time

    from connector.store.queries import sent_since
    path = tmp_path / "c.db"
    db = open_store(path)
    db.execute_sql('DROP TABLE "sent_mail"')
    db.execute_sql('DELETE FROM "schema_migration" WHERE "name" = ?', ("0004_sent_mail",))
    db.execute_sql('CREATE INDEX "outbox_kind_to_created_at" ON "outbox" ("kind", "to", "created_at")')
    for address, age in (("jörg@acme.example", 60), ("ann@acme.example", 7200)):
        db.execute_sql('INSERT INTO "outbox" ("kind", "mail_from", "rcpt", "to", "cc", "bcc", "subject", '
                       '"message_id", "raw", "status", "attempts", "next_attempt_at", "created_at") '
                       'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                       ("auto_response", "support@example.com", json.dumps([address], ensure_ascii=False),
                        json.dumps([address], ensure_ascii=False), "[]", "[]", "s", "<m>", b"x", "sent", 1,
                        0, time.time() - age))
    db.close()
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    hour_ago = time.time() - 3600
    assert sent_since(hour_ago, kind="auto_response", address="jörg@acme.example") == 1
    assert sent_since(hour_ago, kind="auto_response", domain="acme.example") == 1   # ann's is older
    indexes = {row[1] for row in db.execute_sql('PRAGMA index_list("outbox")').fetchall()}
    assert "outbox_kind_to_created_at" not in indexes
