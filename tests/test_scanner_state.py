"""The scanners' state lives in the store: its tables are made with the others, a store whose
scanner tables an earlier release made keeps their rows, and the queries are the store's."""

import sqlite3

import pytest

from connector.store import migrations
from connector.store.db import open_store
from connector.store.models import SCANNER_DONE, SCANNER_FAILED, SCANNER_GIVEN_UP, ScannerMessage, database
from connector.store.scanners import MAX_ATTEMPTS, ScannerState

# The scanner tables as the release before this change made them (scanners/state.py's create_tables).
OLD_SCANNER_TABLES = """
CREATE TABLE "scanner_folder" ("id" INTEGER NOT NULL PRIMARY KEY, "scanner" VARCHAR(255) NOT NULL,
    "folder" VARCHAR(255) NOT NULL, "uidvalidity" INTEGER, "last_uid" INTEGER NOT NULL, "updated_at" REAL);
CREATE UNIQUE INDEX "scannerfolder_scanner_folder" ON "scanner_folder" ("scanner", "folder");
CREATE TABLE "scanner_status" ("id" INTEGER NOT NULL PRIMARY KEY, "scanner" VARCHAR(255) NOT NULL,
    "last_success" REAL, "last_error" TEXT, "last_error_at" REAL, "imported" INTEGER NOT NULL);
CREATE UNIQUE INDEX "scannerstatus_scanner" ON "scanner_status" ("scanner");
CREATE TABLE "scanner_message" ("id" INTEGER NOT NULL PRIMARY KEY, "scanner" VARCHAR(255) NOT NULL,
    "folder" VARCHAR(255) NOT NULL, "uidvalidity" INTEGER NOT NULL, "uid" INTEGER NOT NULL,
    "state" VARCHAR(255) NOT NULL, "rule" VARCHAR(255), "spool_id" INTEGER, "sha256" VARCHAR(255),
    "attempts" INTEGER NOT NULL, "error" TEXT, "updated_at" REAL NOT NULL);
CREATE UNIQUE INDEX "scannermessage_scanner_folder_uidvalidity_uid" ON "scanner_message"
    ("scanner", "folder", "uidvalidity", "uid");
CREATE INDEX "scannermessage_scanner_sha256" ON "scanner_message" ("scanner", "sha256");
INSERT INTO "scanner_folder" VALUES (1, 'support', 'INBOX', 7, 41, 1.0);
INSERT INTO "scanner_message" VALUES (1, 'support', 'INBOX', 7, 41, 'done', 'invoices', 3, 'abc', 0, NULL, 1.0);
"""


def tables(path):
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_a_new_store_has_the_scanner_tables(tmp_path):
    path = tmp_path / "connector.db"
    open_store(path)
    database.close()
    assert {"scanner_folder", "scanner_status", "scanner_message"} <= tables(path)


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_a_store_with_scanner_tables_of_the_earlier_release_keeps_them(tmp_path):
    path = tmp_path / "connector.db"
    open_store(path)
    database.execute_sql('DROP TABLE "scanner_folder"')
    database.execute_sql('DROP TABLE "scanner_status"')
    database.execute_sql('DROP TABLE "scanner_message"')
    database.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCANNER_TABLES)
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    state = ScannerState("support")
    assert (state.folder("INBOX").uidvalidity, state.folder("INBOX").last_uid) == (7, 41)
    assert state.known_imports(["abc"]) == {"abc": 3}
    state.advance("INBOX", 7, 42)
    assert state.folder("INBOX").last_uid == 42


@pytest.mark.sqlite_only("a unit test on an SQLite file of its own")
def test_a_message_that_keeps_failing_is_given_up(tmp_path):
    open_store(tmp_path / "connector.db")
    state = ScannerState("support", clock=lambda: 5.0)
    state.record("INBOX", 7, [{"uid": 1, "state": SCANNER_DONE, "sha256": "x", "spool_id": 1}])
    for _ in range(MAX_ATTEMPTS):
        state.record("INBOX", 7, [{"uid": 2, "state": SCANNER_FAILED, "error": "fetch failed"}])
    rows = {row.uid: (row.state, row.attempts) for row in ScannerMessage.select()}
    assert rows == {1: (SCANNER_DONE, 0), 2: (SCANNER_GIVEN_UP, MAX_ATTEMPTS)}
    assert state.final_uids("INBOX", 7) == {1, 2}
