"""The spool: the first durable home of every received message.

Every intake (SMTP/LMTP, pipe, IMAP, replay) calls `store_message` or the
`GroupCommitter`; success is answered to the sender only after the row
holding the raw bytes and the envelope is committed (synchronous=FULL).
The pipeline then processes `queued` rows; see `connector.pipeline.runner`.
"""

import hashlib
import queue
import threading
import time

from connector.store.models import SPOOL_QUEUED, SpoolEntry, database


def spool_row(raw, mail_from, rcpt_to, intake, hints, now):
    return {
        "received_at": now,
        "intake": intake,
        "mail_from": mail_from,
        "rcpt_to": list(rcpt_to or ()),
        "raw": raw,
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "hints": hints,
        "state": SPOOL_QUEUED,
    }


def store_message(raw, *, mail_from=None, rcpt_to=(), intake, hints=None, clock=time.time):
    """Commit one message to the spool and return its id (durable on return)."""
    with database.atomic():
        return SpoolEntry.insert(**spool_row(raw, mail_from, rcpt_to, intake, hints, clock())).execute()


class GroupCommitter:
    """Commits messages from many SMTP sessions in shared transactions.

    Each `submit` waits until its message is on disk. One writer thread takes
    whatever is waiting, writes it in one transaction with one fsync, then
    wakes every waiting session: throughput grows with concurrency instead of
    being bound by one fsync per message.
    """

    MAX_BATCH = 64

    def __init__(self, clock=time.time):
        self._queue = queue.SimpleQueue()
        self._clock = clock
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    async def submit(self, loop, raw, *, mail_from, rcpt_to, intake, hints=None):
        future = loop.create_future()
        self._queue.put((loop, future, (raw, mail_from, rcpt_to, intake, hints)))
        return await future

    def close(self):
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch):
        now = self._clock()
        try:
            ids = []
            with database.atomic():
                for _, _, args in batch:
                    ids.append(SpoolEntry.insert(**spool_row(*args, now)).execute())
        except Exception as exc:  # answered as a temporary failure by the intake
            for loop, future, _ in batch:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            return
        for (loop, future, _), spool_id in zip(batch, ids):
            loop.call_soon_threadsafe(_set_result, future, spool_id)


def _set_result(future, value):
    if not future.done():
        future.set_result(value)


def _set_exception(future, exc):
    if not future.done():
        future.set_exception(exc)
