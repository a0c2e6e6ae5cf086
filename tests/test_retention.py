"""Retention and the `db` commands on real SQLite files: what is pruned, what never is,
and a store from before migrations upgrading with a backup."""

import json
import os
import sqlite3
import time

import pytest

from connector.cli import main
from connector.store import outbox
from connector.store.db import open_store, spool_path
from connector.store.models import (
    OUTBOX_PENDING, OUTBOX_SENT, SPOOL_DONE, SPOOL_SHUNTED, TRIAGE_AWAITING_REVIEW, TRIAGE_CLOSED, OutboxBody,
    OutboxEntry, Processing, TriageItem)
from connector.store.retention import DAY, prune
from connector.store.spool import store_message

NOW = time.time()
OLD, NEW = NOW - 40 * DAY, NOW - 5 * DAY


def _ini(tmp_path, extra=""):
    ini = tmp_path / "connector.ini"
    ini.write_text("[connector]\npublic_address = support@example.com\n"
                   f"notifications_address = notifications@example.com\ndatabase = c.db\n{extra}")
    return ini


def _spooled(received, state, triage=None):
    spool_id = store_message(b"Subject: x\r\n\r\nbody\r\n", intake="smtp", clock=lambda: received)
    Processing.create(spool_id=spool_id, state=state, action="triage" if triage else "new_ticket",
                      processed_at=received)
    if triage:
        TriageItem.create(spool_id=spool_id, status=triage, reason="unknown_sender", received_at=received)
    return spool_id


def _outbox(status, sent_at):
    return outbox.queue(dict(kind="distribution", mail_from="support@example.com", rcpt=["a@x.example"],
                             raw=b"Subject: y\r\n\r\nout\r\n", status=status, next_attempt_at=0,
                             created_at=sent_at or OLD, sent_at=sent_at))


def _raw(db_path, table, row_id):
    """The length of a spool entry's or an outbox row's bytes (0: pruned)."""
    path, key = (spool_path(db_path), "id") if table == "spool" else (db_path, "outbox_id")
    row = sqlite3.connect(path).execute(f'SELECT length(raw) FROM "{table}" WHERE {key} = ?', (row_id,)).fetchone()
    return row[0] if row else 0


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_prune_keeps_what_may_still_be_needed(tmp_path):
    path = tmp_path / "c.db"
    open_store(path)
    filed_old, filed_new = _spooled(OLD, SPOOL_DONE), _spooled(NEW, SPOOL_DONE)
    shunted = _spooled(OLD, SPOOL_SHUNTED)
    in_review = _spooled(OLD, SPOOL_DONE, triage=TRIAGE_AWAITING_REVIEW)
    reviewed = _spooled(OLD, SPOOL_DONE, triage=TRIAGE_CLOSED)
    unfiled = store_message(b"Subject: z\r\n\r\nwaiting\r\n", intake="smtp", clock=lambda: OLD)
    sent_old, sent_new, pending = _outbox(OUTBOX_SENT, OLD), _outbox(OUTBOX_SENT, NEW), _outbox(OUTBOX_PENDING, None)

    assert prune(30, now=NOW, batch=1) == {"spool": 2, "outbox": 1}
    assert [_raw(path, "spool", i) == 0 for i in (filed_old, reviewed)] == [True, True]
    assert [_raw(path, "spool", i) > 0 for i in (filed_new, shunted, in_review, unfiled)] == [True] * 4
    assert [_raw(path, "outbox_body", i) for i in (sent_old, sent_new, pending)][0] == 0
    assert _raw(path, "outbox_body", sent_new) > 0 and _raw(path, "outbox_body", pending) > 0
    assert prune(0, now=NOW) == {"spool": 0, "outbox": 0}  # 0 keeps everything


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_export_of_a_pruned_message_says_so(tmp_path, capsys):
    ini = _ini(tmp_path, "[retention]\nraw_days = 30\n")
    open_store(tmp_path / "c.db")
    spool_id = _spooled(OLD, SPOOL_DONE)
    assert main(["-c", str(ini), "db", "prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spool"] == 1
    assert main(["-c", str(ini), "message", "export", "--spool", str(spool_id)]) == 1
    assert "pruned" in capsys.readouterr().err
    assert main(["-c", str(ini), "db", "vacuum", "--json"]) == 0
    sizes = json.loads(capsys.readouterr().out)
    assert sizes["bytes_after"] <= sizes["bytes_before"]


@pytest.mark.sqlite_only("the WAL and its checkpoints")
def test_vacuum_reports_what_the_files_take_after_it(tmp_path, capsys):
    """In WAL mode a VACUUM's result sits in the WAL until a checkpoint: the files shrank only
    later and `db vacuum` reported no gain (outside test: 77914112 -> 77914112)."""
    ini = _ini(tmp_path)
    open_store(tmp_path / "c.db")
    for _ in range(200):
        outbox.queue(dict(kind="distribution", mail_from="support@example.com", rcpt=["a@x.example"],
                          raw=os.urandom(20000), status=OUTBOX_SENT, next_attempt_at=0, created_at=OLD, sent_at=OLD))
    OutboxBody.delete().execute()
    OutboxEntry.delete().execute()
    assert main(["-c", str(ini), "db", "vacuum", "--json"]) == 0
    sizes = json.loads(capsys.readouterr().out)
    on_disk = sum(f.stat().st_size for f in tmp_path.glob("c*.db*") if not f.name.endswith("-shm"))
    assert sizes["bytes_after"] < sizes["bytes_before"] / 4 and sizes["bytes_after"] == on_disk, sizes


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_from_before_migrations_upgrades_with_a_backup(tmp_path, capsys):
    ini = _ini(tmp_path)
    db = open_store(tmp_path / "c.db")
    _spooled(OLD, SPOOL_DONE)
    db.execute_sql('DROP TABLE "schema_migration"')  # what the release before migrations wrote
    db.close()
    assert main(["-c", str(ini), "db", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["version"] == 0 and status["pending"][0] == "0001_baseline"
    assert main(["-c", str(ini), "db", "upgrade", "--json"]) == 0
    upgraded = json.loads(capsys.readouterr().out)
    assert upgraded["pending"] == [] and upgraded["applied"][0] == "0001_baseline"
    backup = tmp_path / "c.db.bak-0"
    assert sqlite3.connect(backup).execute('SELECT COUNT(*) FROM "processing"').fetchone() == (1,)
    assert (backup.stat().st_mode & 0o777) == 0o600


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_pruned_bodies_are_never_sent_or_filed_again(tmp_path, capsys):
    """A sent row with a refused recipient may be retried, a closed item replayed: not once
    their bytes are pruned (an empty mail would go out, an empty message be filed)."""
    ini = _ini(tmp_path)
    open_store(tmp_path / "c.db")
    entry_id = outbox.queue(dict(kind="distribution", mail_from="support@example.com",
                                 rcpt=["a@x.example", "b@x.example"], raw=b"", status=OUTBOX_SENT,
                                 recipients={"a@x.example": {"state": "accepted", "reply": "250", "at": OLD},
                                             "b@x.example": {"state": "refused", "reply": "550", "at": OLD}},
                                 next_attempt_at=0, created_at=OLD, sent_at=OLD))
    assert main(["-c", str(ini), "outbox", "retry", str(entry_id)]) == 1
    assert "pruned" in capsys.readouterr().err
    assert OutboxEntry.get_by_id(entry_id).status == OUTBOX_SENT
    spool_id = _spooled(OLD, SPOOL_DONE, triage=TRIAGE_CLOSED)
    prune(30, now=NOW)
    item = TriageItem.get(TriageItem.spool_id == spool_id)
    assert main(["-c", str(ini), "inbound", "replay", str(item.id), "--force"]) == 1
    assert "pruned" in capsys.readouterr().err
    assert Processing.get_by_id(spool_id).state == SPOOL_DONE


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_db_status_changes_nothing(tmp_path, capsys):
    """`db status` on a store from before migrations: it says so and leaves the file as it was."""
    ini = _ini(tmp_path)
    db = open_store(tmp_path / "c.db")
    db.execute_sql('DROP TABLE "schema_migration"')
    db.close()
    assert main(["-c", str(ini), "db", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 0
    tables = sqlite3.connect(tmp_path / "c.db").execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert "schema_migration" not in {row[0] for row in tables}


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_a_wal_is_cut_back_when_it_starts_over_after_a_burst(tmp_path):
    """After a burst the main file's WAL stayed at 200 MB for good (an outside test): when the
    WAL starts over it is cut back to WAL_SIZE_LIMIT, for the main file and the spool alike."""
    from connector.store.db import WAL_SIZE_LIMIT
    from connector.store.models import database
    open_store(tmp_path / "c.db", synchronous="normal")
    for schema, wal in (("main", tmp_path / "c.db-wal"), ("spool", tmp_path / "c-spool.db-wal")):
        database.execute_sql(f'CREATE TABLE "{schema}"."burst" (x BLOB)')
        with database.atomic():
            for _ in range(WAL_SIZE_LIMIT // (1 << 20) + 8):
                database.execute_sql(f'INSERT INTO "{schema}"."burst" VALUES (zeroblob(1048576))')
        assert wal.stat().st_size > WAL_SIZE_LIMIT
        database.execute_sql(f'PRAGMA "{schema}".wal_checkpoint(PASSIVE)')
        database.execute_sql(f'DELETE FROM "{schema}"."burst"')  # this write starts the WAL over,
        database.execute_sql(f'DROP TABLE "{schema}"."burst"')   # and the next one's commit cuts it back
        assert wal.stat().st_size <= WAL_SIZE_LIMIT, schema


@pytest.mark.parametrize("days", ["-1", "0"])
def test_prune_refuses_days_below_one_and_keeps_the_bytes(tmp_path, days, capsys):
    """`db prune --days -1` dropped the raw bytes of every filed mail (an outside test): a
    one-character typo made for good the decision the README leaves to the helpdesk."""
    ini = _ini(tmp_path)
    open_store(tmp_path / "c.db")
    spool_id = _spooled(OLD, "new_ticket")
    with pytest.raises(SystemExit) as refused:
        main(["-c", str(ini), "db", "prune", "--days", days])
    assert refused.value.code == 2 and "1 or more" in capsys.readouterr().err
    assert _raw(tmp_path / "c.db", "spool", spool_id) > 0


@pytest.mark.sqlite_only("a file that is no SQLite database")
def test_db_status_of_a_file_that_is_no_database_is_one_line(tmp_path, capsys):
    """`db status` on a damaged file printed a 47-line traceback, and without the spool file
    said there was no database at all (an outside test)."""
    ini = _ini(tmp_path)
    (tmp_path / "c.db").write_bytes(os.urandom(8192))
    assert main(["-c", str(ini), "db", "status"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "c.db" in line and "file is not a database" in line
