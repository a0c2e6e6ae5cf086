"""Transient storage faults (a full disk, a database locked by another writer)
delay filing; they never shunt accepted mail. Real faults: a store on a small
tmpfs filled to the last byte, a second SQLite connection holding the write lock."""

import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Instance, make_mail, wait_for
from connector.pipeline.runner import Runner
from connector.settings import load_settings
from connector.store.models import Processing


@pytest.fixture
def small_disk():
    """A 4 MB tmpfs of our own (root only)."""
    path = Path(tempfile.mkdtemp(prefix="connector-small-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        path.rmdir()
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)
    path.rmdir()


def fill(path):
    """Write a file until the filesystem is full; returns it."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.sqlite_only("SQLite's files and their folder")
def test_a_full_disk_delays_filing_and_shunts_nothing(tmp_path, small_disk, capsys):
    from connector.app import open_services
    from connector.log import setup_logging
    from connector.store.spool import store_message
    setup_logging("info")   # to this test's stdout: an earlier test of this process may have logged elsewhere
    inst = Instance(tmp_path, 2500, connector__database=str(small_disk / "connector.db"))
    runner = Runner(open_services(load_settings(inst.ini)))
    ids = [store_message(make_mail(subject=f"Full disk {n}", body="words " * 400).as_bytes(),
                         rcpt_to=["support@example.com"], intake="test") for n in range(8)]
    for name in ("connector.db", "connector-spool.db"):   # no WAL pages left to reuse: writes need new blocks
        with sqlite3.connect(small_disk / name) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = fill(small_disk)

    runner.drain()
    assert list(Processing.select()) == []                 # nothing filed, nothing shunted
    assert "database or disk is full" in capsys.readouterr().out    # the real cause is logged

    filler.unlink()
    wait_for(lambda: runner.drain() is not None and Processing.select().count() == len(ids), 30,
             what="filing after the disk has room again")
    assert {p.state for p in Processing.select()} == {"done"}


@pytest.mark.sqlite_only("an SQLite file lock")
def test_a_database_locked_past_the_busy_timeout_delays_filing_and_shunts_nothing(daemon):
    wait_for(lambda: all(e in daemon.log.read_text() for e in ("daemon.started", "worker.started")), 30,
             what="the daemon to finish starting (it opens the store)")
    locker = sqlite3.connect(daemon.path / "var" / "connector.db", timeout=1)
    locker.execute("BEGIN EXCLUSIVE")        # the worker's write waits 10 s (busy timeout), then fails
    try:
        daemon.send(make_mail(subject="Locked store"))
        wait_for(lambda: "database is locked" in daemon.log.read_text(), 30, what="the lock to be noticed")
    finally:
        locker.rollback()
        locker.close()
    states = daemon.wait_processed(1, timeout=40)
    assert [(row[1], row[2]) for row in states] == [("done", "new_ticket")]
    assert daemon.tickets()[0]["subject"] == "Locked store"
