"""The spool: the first durable home of every received message.

Every intake (SMTP/LMTP, pipe, IMAP, replay) calls `store_message` or the
`GroupCommitter`; success is answered to the sender only after the row
holding the raw bytes and the envelope is committed (synchronous=FULL).
The pipeline then processes entries that have no `Processing` row yet; see
`connector.pipeline.runner`. The spool is append-only.
"""

import hashlib
import json
import queue
import threading
import time

from connector.log import get_logger
from connector.store import dialect, wakeup
from connector.store.faults import describe, transient_fault
from connector.store.models import SpoolEntry, database

log = get_logger("spool")


def unsaved_entry(raw, *, mail_from=None, rcpt_to=(), intake, hints=None, clock=time.time):
    """A spool entry that is not stored: what `replay --dry-run` decides on."""
    return SpoolEntry(received_at=clock(), intake=intake, mail_from=mail_from, rcpt_to=list(rcpt_to or ()),
                      raw=raw, size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), hints=hints)


def store_message(raw, *, mail_from=None, rcpt_to=(), intake, hints=None, clock=time.time):
    """Commit one message to the spool and return its id (durable on return)."""
    return store_messages([(raw, hints)], mail_from=mail_from, rcpt_to=rcpt_to, intake=intake, clock=clock)[0]


def store_messages(messages, *, mail_from=None, rcpt_to=(), intake, clock=time.time):
    """Commit (raw, hints) pairs to the spool in one transaction; their ids, in order (durable on
    return, unless the caller holds a transaction: then with its commit, and it wakes the worker)."""
    now = clock()
    with database.atomic():
        ids = _insert_returning([_values(raw, mail_from, rcpt_to, intake, hints, now) for raw, hints in messages])
    if not database.in_transaction():
        wakeup.notify(wakeup.WORKER)
    return ids


class GroupCommitter:
    """Commits messages from many SMTP sessions in shared transactions.

    Every DATA that completes in one turn of the event loop joins a batch;
    the batch goes to one writer thread, which writes it in one transaction
    with one fsync while the loop keeps serving the other sessions, then
    answers every waiting session at once. Throughput grows with concurrency
    instead of being bound by one fsync, or one thread hand-off, per message.
    """

    def __init__(self, clock=time.time):
        self._queue = queue.SimpleQueue()
        self._clock = clock
        self._pending = []
        self._written = threading.Event()   # set by each commit: the checkpointer has work
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="spool-checkpoint", daemon=True)
        self._checkpointer.start()

    async def submit(self, loop, raw, *, mail_from, rcpt_to, intake, hints=None):
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._hand_over, loop)
        self._pending.append((future, (raw, mail_from, rcpt_to, intake, hints)))
        return await future

    def _hand_over(self, loop):
        batch, self._pending = self._pending, []
        self._queue.put((loop, batch))

    def close(self):
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._stopped.set()
        self._written.set()
        self._checkpointer.join(timeout=10)

    def _checkpoints(self):
        """Copy the spool's WAL back into its file from this thread, at most every
        CHECKPOINT_EVERY seconds, so that no DATA waits behind a checkpoint (SQLite's
        automatic one runs inside the commit that crosses 1000 pages, with two fsyncs)."""
        while not self._stopped.is_set():
            self._written.wait()
            self._written.clear()
            try:
                dialect.checkpoint_spool()
            except Exception as exc:  # a storage fault: the WAL keeps the data, the next commit retries
                log.warning("spool.checkpoint_failed", error=describe(transient_fault(exc) or exc))
            self._stopped.wait(CHECKPOINT_EVERY)

    def _run(self):
        try:  # this thread's connection does not checkpoint: see _checkpoints
            dialect.no_autocheckpoint()
        except Exception as exc:  # then SQLite's automatic checkpoints stay: slower, still correct
            log.warning("spool.checkpoint_failed", error=describe(transient_fault(exc) or exc))
        while True:
            item = self._queue.get()
            if item is None:
                return
            batches = [item]
            while True:  # whatever else is waiting joins this transaction
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batches.append(nxt)
            self._write(batches)

    def _write(self, batches):
        now = self._clock()
        rows = [_values(*args, now) for _, batch in batches for _, args in batch]
        try:
            with database.atomic():
                ids = _insert_returning(rows)
        except Exception as exc:  # answered as a temporary failure by the intake
            for loop, batch in batches:
                loop.call_soon_threadsafe(_resolve, batch, None, exc)
            return
        self._written.set()
        wakeup.notify(wakeup.WORKER)
        results, start = [], 0
        for _, batch in batches:
            results.append(ids[start:start + len(batch)])
            start += len(batch)
        for (loop, batch), ids in zip(batches, results):
            loop.call_soon_threadsafe(_resolve, batch, ids, None)


CHECKPOINT_EVERY = 0.5  # seconds between two checkpoints of the spool by the intake's checkpointer
COLUMNS = ("received_at", "intake", "mail_from", "rcpt_to", "raw", "size", "sha256", "hints")
_INSERT = {}


def _values(raw, mail_from, rcpt_to, intake, hints, now):
    """One spool row as SQL parameters, in COLUMNS order (the writer thread's hot path)."""
    return (now, intake, mail_from, json.dumps(list(rcpt_to or ())), raw, len(raw),
            hashlib.sha256(raw).hexdigest(), None if hints is None else json.dumps(hints))


def _insert_returning(rows, chunk=256):
    """Insert rows, a chunk per statement; returns their ids in row order.

    RETURNING yields rows in no promised order, but rowids are allocated in
    VALUES order within a statement, so the sorted ids match the rows.
    """
    ids = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        sql = _INSERT.get(len(part))
        if sql is None:
            values = ", ".join(["(" + ", ".join("?" * len(COLUMNS)) + ")"] * len(part))
            sql = _INSERT[len(part)] = (f'INSERT INTO "spool"."spool" ({", ".join(COLUMNS)}) '
                                        f'VALUES {values} RETURNING "id"')
        params = [value for row in part for value in row]
        ids += sorted(row[0] for row in database.execute_sql(sql, params).fetchall())
    return ids


def drop_raw(spool_ids):
    """Empty the raw bytes of these entries (`inbound delete`: spam or phishing); the rows,
    their size and sha256 stay, so a copy delivered again is recognised."""
    marks = ", ".join("?" * len(spool_ids))
    database.execute_sql(f'UPDATE "spool"."spool" SET "raw" = ? WHERE "id" IN ({marks})', (b"", *spool_ids))


def _resolve(batch, ids, exc):
    for index, (future, _) in enumerate(batch):
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(ids[index])
