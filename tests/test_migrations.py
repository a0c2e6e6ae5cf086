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
