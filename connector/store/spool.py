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

    The same thread checkpoints the spool's WAL back into its file, after the
    sessions of a batch were answered, once CHECKPOINT_BYTES were committed
    since the last checkpoint, or when no DATA came for CHECKPOINT_IDLE
    seconds. Between two of its own writes, a checkpoint can copy the whole
    WAL, so the next commit starts the WAL over and overwrites its blocks:
    the commit's fdatasync then writes the data only. A checkpoint beside the
    commits (another thread, or SQLite's automatic one) never catches up under
    a steady load: the WAL grows by every commit, and each fdatasync of a
    growing file waits for a journal commit of the file system, which the
    worker's and delivery's writes keep busy.
    """

    def __init__(self, clock=time.time):
        self._queue = queue.SimpleQueue()
        self._clock = clock
        self._pending = []
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

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

    def _run(self):
        try:  # this thread's commits do not checkpoint inside the commit: see _checkpoint
            dialect.no_autocheckpoint()
        except Exception as exc:  # then SQLite's automatic checkpoints stay: slower, still correct
            log.warning("spool.checkpoint_failed", error=describe(transient_fault(exc) or exc))
        unchecked = 0  # bytes committed since the last checkpoint
        while True:
            try:
                item = self._queue.get(timeout=CHECKPOINT_IDLE if unchecked else None)
            except queue.Empty:
                unchecked = self._checkpoint()
                continue
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
            unchecked += self._write(batches)
            if unchecked >= CHECKPOINT_BYTES:
                unchecked = self._checkpoint()

    def _checkpoint(self):
        """Copy the WAL into the spool file; returns the bytes counted as unchecked after it:
        0, or 1 when it failed (a storage fault: the WAL keeps the data), so that it is tried
        again when DATA pauses or CHECKPOINT_BYTES more came, not after every batch."""
        try:
            dialect.checkpoint_spool()
        except Exception as exc:
            log.warning("spool.checkpoint_failed", error=describe(transient_fault(exc) or exc))
            return 1
        return 0

    def _write(self, batches):
        """Commit `batches` in one transaction and answer their sessions; returns the bytes written."""
        now = self._clock()
        rows = [_values(*args, now) for _, batch in batches for _, args in batch]
        try:
            with database.atomic():
                ids = _insert_returning(rows)
        except Exception as exc:  # answered as a temporary failure by the intake
            for loop, batch in batches:
                loop.call_soon_threadsafe(_resolve, batch, None, exc)
            return 0
        start = 0
        for loop, batch in batches:
            loop.call_soon_threadsafe(_resolve, batch, ids[start:start + len(batch)], None)
            start += len(batch)
        wakeup.notify(wakeup.WORKER)  # after the sessions' answers: a datagram per filing process
        return sum(row[5] for row in rows)


CHECKPOINT_BYTES = 4 << 20  # committed bytes between two checkpoints under load (SQLite's own: 1000 pages)
CHECKPOINT_IDLE = 0.5       # seconds without a DATA after which what was committed is checkpointed
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
