"""The intake's group commit against real SQLite files: the spool's WAL stays bounded under
a steady load, and every session is answered with its own spool id."""

import asyncio
import os

import pytest

from connector.store.db import open_store, spool_path
from connector.store.models import SpoolEntry
from connector.store.spool import CHECKPOINT_BYTES, GroupCommitter

BODY = b"Subject: load\r\n\r\n" + b"x" * 4096


@pytest.mark.sqlite_only("SQLite's WAL and its checkpoints")
def test_the_spool_wal_starts_over_under_a_steady_load(tmp_path):
    """Batches committed back to back, 3x CHECKPOINT_BYTES in all: the writer checkpoints
    between two of them, so the WAL is started over and stays near CHECKPOINT_BYTES (a
    checkpointer beside the commits never caught up: the WAL grew by every commit, and each
    fdatasync of the growing file waited for a file system journal commit)."""
    open_store(tmp_path / "c.db")
    wal = spool_path(tmp_path / "c.db").with_name(spool_path(tmp_path / "c.db").name + "-wal")
    committer = GroupCommitter()
    per_batch = 50
    batches = 3 * CHECKPOINT_BYTES // (per_batch * len(BODY)) + 1
    largest = 0

    async def load():
        nonlocal largest
        loop = asyncio.get_running_loop()
        ids = []
        for _ in range(batches):  # the next batch is handed over as soon as the last one is answered
            ids += await asyncio.gather(*(committer.submit(loop, BODY, mail_from="a@example.com",
                                                           rcpt_to=["support@example.com"], intake="smtp")
                                          for _ in range(per_batch)))
            largest = max(largest, os.path.getsize(wal))
        return ids

    try:
        ids = asyncio.run(load())
    finally:
        committer.close()
    assert len(set(ids)) == batches * per_batch == SpoolEntry.select().count()
    assert sorted(ids) == ids
    assert largest < 2 * CHECKPOINT_BYTES, f"the spool's WAL grew to {largest} bytes"
