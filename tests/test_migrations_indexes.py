"""Migration 0015_fewer_indexes: an old store loses the indexes nothing reads, as a new store has none of them.

Every filed message wrote a page of each (issue 14); lookups by ticket use the
unique or composite indexes that lead with the ticket.
"""

import sqlite3

from connector.store import migrations
from connector.store.db import open_store
from test_migrations import load_old_store


def _indexes(path):
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'")}
    finally:
        conn.close()


def test_an_old_store_drops_the_unused_indexes_and_keeps_the_ones_lookups_by_ticket_use(tmp_path):
    path = load_old_store(tmp_path / "old")
    assert set(migrations.UNUSED_INDEXES) - {"ticketevent_ticket_id"} <= _indexes(path)   # 9f567d5 had them
    open_store(path).close()
    upgraded = _indexes(path)
    assert not set(migrations.UNUSED_INDEXES) & upgraded
    assert {"externalrecipient_ticket_id_address", "employeerecipient_ticket_id_email",
            "ticketevent_ticket_id_at", "threadref_message_id"} <= upgraded

    open_store(tmp_path / "new" / "connector.db").close()
    assert not set(migrations.UNUSED_INDEXES) & _indexes(tmp_path / "new" / "connector.db")


def test_lookups_by_ticket_still_use_an_index(tmp_path):
    path = tmp_path / "connector.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    for table in ("externalrecipient", "employeerecipient", "ticket_event"):
        plan = " ".join(row[-1] for row in conn.execute(f'EXPLAIN QUERY PLAN SELECT * FROM "{table}" WHERE ticket_id = 1'))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (table, plan)
    conn.close()
