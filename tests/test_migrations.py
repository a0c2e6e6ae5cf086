"""Schema migrations: a store written before a column existed opens and keeps its data."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Instance, make_mail, wait_for
from connector.store import migrations
from connector.store.db import open_store


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_new_store_records_every_migration(tmp_path):
    db = open_store(tmp_path / "c.db")
    assert migrations.status(db) == {"version": len(migrations.MIGRATIONS),
                                     "latest": len(migrations.MIGRATIONS), "pending": []}


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
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


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
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
                       '"message_id", "status", "attempts", "next_attempt_at", "created_at") '
                       'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                       ("auto_response", "support@example.com", json.dumps([address], ensure_ascii=False),
                        json.dumps([address], ensure_ascii=False), "[]", "[]", "s", "<m>", "sent", 1,
                        0, time.time() - age))
    db.close()
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    hour_ago = time.time() - 3600
    assert sent_since(hour_ago, kind="auto_response", address="jörg@acme.example") == 1
    assert sent_since(hour_ago, kind="auto_response", domain="acme.example") == 1   # ann's is older
    indexes = {row[1] for row in db.execute_sql('PRAGMA index_list("outbox")').fetchall()}
    assert "outbox_kind_to_created_at" not in indexes


DATA = Path(__file__).resolve().parent / "data"
OLD = "9f567d5"  # the last release before migrations; tests/data/make_store_9f567d5.py made its store
SENT_LATER = ("status", "attempts", "next_attempt_at", "last_error", "sent_at")  # delivery's columns


def load_old_store(var):
    """The store 9f567d5's daemon wrote (tests/data/store-9f567d5*.sql), as files in `var`."""
    var.mkdir(exist_ok=True)
    for dump, name in ((f"store-{OLD}.sql", "connector.db"), (f"store-{OLD}-spool.sql", "connector-spool.db")):
        conn = sqlite3.connect(var / name)
        conn.executescript((DATA / dump).read_text(encoding="utf-8"))
        conn.close()
    return var / "connector.db"


def table_rows(path):
    """{table: [row as {column: value}]} of every table in the main file, by rowid."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        return {t: [dict(r) for r in conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid')] for t in tables}
    finally:
        conn.close()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_written_by_the_release_before_migrations_upgrades_on_start_and_keeps_every_row(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    path = load_old_store(tmp_path / "var")
    before = table_rows(path)
    assert len(before["ticket"]) == 2 and len(before["message"]) == 7 and len(before["triage"]) == 2
    waiting = [row for row in before["outbox"] if row["status"] == "pending"]
    assert waiting and all(row["attempts"] for row in waiting)   # tried while the relay was down
    status = inst.json("db", "status")
    assert status["version"] == 0 and status["pending"] == [name for name, _ in migrations.MIGRATIONS]

    inst.start()
    try:
        assert inst.json("db", "status")["pending"] == []
        assert (tmp_path / "var" / "connector.db.bak-0").exists()
        # The mail the old release could not deliver goes out now, byte for byte.
        wait_for(lambda: len(sink.messages) == len(waiting), 20, what="the old pending rows delivered")
        assert sorted((rcpt, content) for _, rcpt, content in sink.messages) == \
            sorted((json.loads(row["rcpt"]), row["raw"]) for row in waiting)
        inst.wait_delivered()   # the relay's 250 comes before the commit of `sent`
        after = table_rows(path)
        # every outgoing mail's bytes moved to outbox_body (0016_outbox_bodies), none lost
        assert {row["outbox_id"]: row["raw"] for row in after["outbox_body"]} == \
            {row["id"]: row["raw"] for row in before["outbox"]}
        for row in before["outbox"]:
            del row["raw"]
        for table, rows in before.items():
            kept = [{column: row[column] for column in old} for row, old in zip(after[table], rows)]
            if table == "outbox":
                kept = [{c: v for c, v in row.items() if c not in SENT_LATER} for row in kept]
                rows = [{c: v for c, v in row.items() if c not in SENT_LATER} for row in rows]
            assert kept == rows, table
        assert {row["status"] for row in after["outbox"]} == {"sent"}
        assert [t["subject"] for t in inst.tickets()] == ["Printer broken", "Zähler defekt"]

        # New mail files into the upgraded store: a reply to an old ticket, and a new ticket.
        messages = inst.ticket(2)["messages"]
        inst.send(make_mail(subject="Re: [Ticket #2] Zähler defekt", sender="jörg@beta.example",
                            body="Er zählt wieder.\n"))
        inst.send(make_mail(subject="Scanner jammed", sender="cleo@acme.example"))
        inst.wait_processed(len(before["processing"]) + 2)
        tickets = {t["number"]: t for t in inst.tickets()}
        assert sorted(tickets) == [1, 2, 3] and tickets[3]["subject"] == "Scanner jammed"
        assert inst.ticket(2)["messages"][:-1] == messages
        assert inst.ticket(2)["messages"][-1]["from"] == "jörg@beta.example"
        inst.wait_delivered()
    finally:
        inst.stop()


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_run_refuses_an_old_schema_when_auto_upgrade_is_off(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__auto_upgrade="no")
    path = load_old_store(tmp_path / "var")
    before = table_rows(path)
    result = subprocess.run([sys.executable, "-m", "connector", "-c", str(inst.ini), "run"],
                            capture_output=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    error = result.stderr.decode()
    assert "connector db upgrade" in error and "auto_upgrade" in error and "Traceback" not in error
    injected = inst.cli("inject", input=make_mail(subject="Piped meanwhile").as_bytes(), check=False)
    assert injected.returncode == 75                           # Postfix keeps it and tries again
    assert inst.json("db", "status")["version"] == 0          # untouched: no migration, no backup
    assert table_rows(path) == before and not list((tmp_path / "var").glob("*.bak-*"))

    upgraded = inst.json("db", "upgrade")
    assert upgraded["applied"] == [name for name, _ in migrations.MIGRATIONS] and upgraded["pending"] == []
    inst.start()
    try:
        inst.send(make_mail(subject="After the upgrade", sender="cleo@acme.example"))
        inst.wait_processed(len(before["processing"]) + 1)
        assert [t["subject"] for t in inst.tickets()][-1] == "After the upgrade"
    finally:
        inst.stop()


def test_a_new_store_is_made_whatever_auto_upgrade_says(tmp_path, sink):
    inst = Instance(tmp_path, sink.port, connector__auto_upgrade="no")
    inst.start()
    try:
        inst.send(make_mail(subject="First mail"))
        inst.wait_processed(1)
        assert inst.json("db", "status")["pending"] == []
    finally:
        inst.stop()
