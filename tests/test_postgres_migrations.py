"""The same MIGRATIONS on PostgreSQL (issue 13): a new database is made at the latest
schema with every migration recorded; a database one migration behind (its column
missing, its row gone) is upgraded by `connector db upgrade` and keeps its rows; a
migration appended later reaches it with `add_column` as on SQLite."""

import psycopg

from conftest import Instance, make_mail
from connector.settings.values import PostgresURL
from connector.store import migrations
from connector.store.db import open_store


def columns(url, table):
    with psycopg.connect(url) as conn:
        return {row[0]: row[1] for row in conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,))}


def test_a_new_postgresql_database_is_made_at_the_latest_schema(pg_url):
    db = open_store(PostgresURL(pg_url))
    assert migrations.status(db) == {"version": len(migrations.MIGRATIONS),
                                     "latest": len(migrations.MIGRATIONS), "pending": []}
    outbox = columns(pg_url, "outbox")
    assert {"recipients", "queued_at", "auto_key", "blocked"} <= set(outbox)
    # timestamps keep their fractions (peewee's default REAL would hold them to two minutes)
    assert outbox["created_at"] == "double precision" and columns(pg_url, "outbox_body")["raw"] == "bytea"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'spool' "
                            "AND table_name = 'spool'").fetchone()[0] == 1
    db.close()


def test_db_upgrade_brings_an_older_postgresql_database_up_and_keeps_its_rows(tmp_path, sink, pg_url):
    inst = Instance(tmp_path, sink.port, connector__database=pg_url, connector__data_dir="var",
                    connector__auto_upgrade="no")
    inst.json("db", "upgrade")
    inst.cli("inject", "--sender", "ann@acme.example", "--recipient", "support@example.com", input=make_mail(subject="Old").as_bytes())
    with psycopg.connect(pg_url) as conn:  # as a release before 0010_blocks left it
        conn.execute('ALTER TABLE "outbox" DROP COLUMN "blocked"')
        conn.execute('DROP TABLE "block"')
        conn.execute("DELETE FROM schema_migration WHERE name = '0010_blocks'")
    status = inst.json("db", "status")
    assert status["pending"] == ["0010_blocks"] and status["version"] == status["latest"] - 1
    refused = inst.cli("tickets", "list", check=False)  # auto_upgrade = no: one line naming `db upgrade`
    assert refused.returncode != 0 and b"connector db upgrade" in refused.stderr
    upgraded = inst.json("db", "upgrade")
    assert upgraded["applied"] == ["0010_blocks"] and upgraded["pending"] == []
    assert "blocked" in columns(pg_url, "outbox") and columns(pg_url, "block")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM spool.spool").fetchone()[0] == 1  # the row is still there


def test_an_appended_migration_adds_its_column_on_postgresql(pg_url, monkeypatch):
    url = PostgresURL(pg_url)
    db = open_store(url)
    db.execute_sql('INSERT INTO "contact" ("email", "name", "created_at") VALUES (?, ?, ?)',
                   ("ann@acme.example", "Ann", 1.5))
    db.close()

    def add_nickname(db):
        migrations.add_column(db, "contact", "nickname", "TEXT")
        migrations.add_column(db, "contact", "seen_at", "REAL")

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + (("9999_nickname", add_nickname),))
    db = open_store(url)
    assert migrations.status(db)["pending"] == []
    db.close()
    assert columns(pg_url, "contact")["seen_at"] == "double precision"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT email, name, nickname, created_at FROM contact').fetchall() == [
            ("ann@acme.example", "Ann", None, 1.5)]
