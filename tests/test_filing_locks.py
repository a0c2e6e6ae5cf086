"""The worker's filing transaction and its idle look, on real SQLite files.

While a message is being filed, the intake must still be able to commit to
the spool at once (issue 14: BEGIN IMMEDIATE locked the spool file too). And
an idle worker's look for work must not rescan a spool full of filed mail."""

import sqlite3

import pytest

from connector.store.db import open_store, spool_path
from connector.store.models import SPOOL_DONE, Processing
from connector.store.queries import filing_transaction, unprocessed_spool_ids
from connector.store.spool import store_message


def _other_connection(path):
    return sqlite3.connect(path, timeout=0, isolation_level=None)


@pytest.mark.sqlite_only("an SQLite file lock")
def test_filing_locks_the_main_file_only(tmp_path):
    path = tmp_path / "c.db"
    open_store(path)
    spool_id = store_message(b"Subject: x\r\n\r\nbody\r\n", intake="smtp")
    with filing_transaction(spool_id):   # nothing written inside yet: the lock is the transaction's own
        intake = _other_connection(spool_path(path))
        intake.execute("BEGIN")
        intake.execute('INSERT INTO "spool" ("received_at", "intake", "rcpt_to", "raw", "size", "sha256") '
                       "VALUES (1, 'smtp', '[]', x'00', 1, '')")
        intake.execute("COMMIT")   # the spool is free while the main file is being written
        other = _other_connection(path)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute('UPDATE "processing" SET "attempts" = 1')   # the main file is ours
        Processing.create(spool_id=spool_id, state=SPOOL_DONE)
    assert Processing.get_by_id(spool_id).state == SPOOL_DONE


@pytest.mark.sqlite_only("an SQLite file lock")
def test_an_idle_look_starts_past_what_was_filed(tmp_path):
    from connector.pipeline.runner import Runner

    open_store(tmp_path / "c.db")
    ids = [store_message(b"Subject: x\r\n\r\n.\r\n", intake="smtp") for _ in range(5)]
    for spool_id in ids:
        Processing.create(spool_id=spool_id, state=SPOOL_DONE)
    runner = Runner.__new__(Runner)
    runner.floor, runner.partition = 0, None
    assert runner.waiting_ids() == []
    assert runner.floor == ids[-1] + 1                 # the next look reads no filed row
    assert unprocessed_spool_ids(runner.floor, 10) == []
    new = store_message(b"Subject: y\r\n\r\n.\r\n", intake="smtp")
    assert runner.waiting_ids() == [new]


@pytest.mark.sqlite_only("an SQLite file lock")
def test_filing_processes_take_turns_on_a_private_lock_file(tmp_path):
    """Two filing workers: the second waits on an flock (woken when the first commits), not
    in SQLite's busy handler, which sleeps 1, 2, 5... ms between looks."""
    import fcntl
    import os

    from connector.store.queries import FILING_LOCK
    open_store(tmp_path / "c.db")
    spool_id = store_message(b"Subject: x\r\n\r\nbody\r\n", intake="smtp")
    with filing_transaction(spool_id):
        other = os.open(tmp_path / FILING_LOCK, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)   # another worker would wait here
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)           # the turn is free after the commit
    os.close(other)
    assert (tmp_path / FILING_LOCK).stat().st_mode & 0o777 == 0o600
