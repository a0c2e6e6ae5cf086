"""Drive the pipeline over spooled messages; shunt what raises.

An entry is to be processed while it has no `Processing` row (or one a
replay set back to `queued`). Each entry is decided without holding the
write lock, then written in one transaction (holding the main file's write
lock only, so the intake's spool commits never wait for it) that first re-reads
its processing state, so two processes (the daemon's workers and a `replay`)
never file the same entry twice, and checks that no other mail filed since
changed the decision (`apply.plan_current`: ticket number, thread, duplicate,
budgets); when one did, the entry is decided again under the lock, reusing
the pure work (parse, classification, reply text) of the first decision.

Several filing processes (`[worker] processes`) each take their `partition`
of the spool and decide in parallel, but an entry is filed only once every
entry spooled before it is filed (by whichever process): so mail is filed in
arrival order, as with one worker (mail of one thread ends on one ticket, the
first of two copies is the one filed, ticket numbers, triage ids and the last
units of a budget go in arrival order), and a decision made before an earlier
entry was filed is checked under the lock (`plan_current`). Meanwhile the
process decides its next entries and files the waiting one as soon as it may
(looking again every ORDER_WAIT when it has nothing else to do, for at most
ORDER_PATIENCE before it goes idle). Nothing waits on a later entry, so the
waits always end. An exception rolls the transaction back
and records the entry `shunted` with its reason; a triage item
(`needs_attention`, `processing_error`) makes it visible, and `connector
inbound replay ID` queues it again.

On PostgreSQL every worker of every node takes from one pool instead
(`connector.store.claims`: leases of the lowest waiting entries, taken with
SKIP LOCKED; a dead process's come back when its lease runs out) and files in
arrival order the same way; the partition is not used. Its floor trails the
spool by SETTLE seconds, as ids come from a sequence when a mail is spooled and
are committed a moment later, so one spooled by another node may show up below
ids already seen (and back to 0 every RESCAN_EVERY, for a straggler slower
than that).

Only what the message itself causes is shunted. A storage fault (disk full,
database locked past the busy timeout, I/O error; `connector.store.faults`)
leaves the entry queued: the runner logs `storage.fault` with the real
cause, stops the batch and tries again after a backoff (RETRY_INITIAL,
doubling up to RETRY_MAX) until the fault is gone (`storage.recovered`).

Each message is decided under its time budget (`[connector]
message_time_budget`, see `connector.timebudget`): the pure steps that can be
slow on hostile mail give up at the deadline, and the message is filed with
what is known (full text kept, reply text marked as not extracted) instead
of holding up the queue.
"""

import collections
import time
import traceback

from connector import timebudget
from connector.log import bind_message, clear_message, get_logger
from connector.outbound.compose import Templates
from connector.pipeline import decide
from connector.pipeline.apply import apply_decision, plan_current, record_processing
from connector.pipeline.context import (
    CONTACT_ONLY, DUPLICATE, FOLLOW_UP, IGNORED_AUTOMATIC, INTERNAL, NEW_TICKET, REASON_PROCESSING_ERROR,
    STAFF_COMMAND, TRIAGE, Context)
from connector.store import bulk, claims, dialect, wakeup
from connector.store.faults import describe, transient_fault
from connector.store.filing import close_triage, next_triage_id, processing, requeue as requeue_entry
from connector.store.models import SPOOL_QUEUED, SPOOL_SHUNTED, TRIAGE_NEEDS_ATTENTION, TriageItem, database
from connector.store.queries import (
    filing_transaction, first_unfiled, last_sent_id, last_spool_id, processing_state, requeued_spool_ids,
    spool_entry, spool_entry_and_state, unprocessed_spool_ids)

log = get_logger("pipeline")

EVENTS = {
    NEW_TICKET: "ticket.created",
    FOLLOW_UP: "message.filed",
    INTERNAL: "message.filed",
    TRIAGE: "message.triaged",
    DUPLICATE: "message.duplicate",
    IGNORED_AUTOMATIC: "message.ignored",
    CONTACT_ONLY: "contact.created",
    STAFF_COMMAND: "message.staff_command",
}
BATCH = 200
RETRY_INITIAL = 0.5   # seconds before the first retry after a storage fault
RETRY_MAX = 30.0      # the longest wait between two retries
ORDER_WAIT = 0.002    # seconds between two looks while its entries wait for earlier ones (see above)
ORDER_PATIENCE = 1.0  # seconds of such looks without progress before the drain returns (the worker idles)
LATER = "later"       # what `process` returns for an entry that waits for earlier ones
SETTLE = 2.0          # PostgreSQL: seconds a spool id may take from its sequence to its commit (see above)
RESCAN_EVERY = 600.0  # PostgreSQL: seconds between two looks from the spool's start


class Runner:
    claims = None  # PostgreSQL: the entries this process holds (`connector.store.claims`)

    def __init__(self, services, partition=None):
        self.services = services
        self.templates = Templates(services.settings.folder_candidates("templates"))
        self.partition = partition  # (I, N): the entries this process files; None: all
        self.floor = 0  # every spool id of the partition below it has been processed
        self.filed_below = 0  # every spool id below it has been filed, by any process
        self.waiting = {}  # spool id -> its decision, for entries waiting for earlier ones
        self.monotonic = time.monotonic
        self.retry_at = 0.0   # after a storage fault: nothing is tried before this (monotonic clock)
        self.retry_delay = 0.0
        if dialect.is_postgres():
            settings = services.settings
            self.claims = claims.SpoolClaims(settings.node_name, claims.lease_of(settings), self.monotonic)
            self.floor_marks = collections.deque()  # (monotonic time, the first unfiled id then)
            self.rescan_at = self.monotonic() + RESCAN_EVERY

    def dry_run(self, spool):
        """The decision for an unsaved spool entry; writes nothing."""
        return self._decide(spool)

    def _decide(self, spool, previous=None):
        with timebudget.limit(self.services.settings.message_time_budget):
            return decide(Context(self.services, spool, self.templates, previous=previous,
                                  sent_mark=last_sent_id()))

    def _earlier_unfiled(self, ctx):
        """Whether an entry spooled before `ctx`'s is not filed yet."""
        if self.filed_below < ctx.spool.id:
            self.filed_below = first_unfiled(self.filed_below) or ctx.spool.id
        return self.filed_below < ctx.spool.id

    def process(self, spool_id):
        """Process one entry; returns the Context, None when it was not waiting, or LATER
        when it waits for earlier entries (decided, not filed: call again)."""
        try:
            spool, state = spool_entry_and_state(spool_id)
            if spool is None or state not in (None, SPOOL_QUEUED):
                self._done(spool_id, release=True)
                return None
            bind_message(spool_id=spool_id)
            ctx = self.waiting.pop(spool_id, None) or self._decide(spool)
            bind_message(message_id=ctx.parsed.message_id)
            if (self.partition or self.claims) and self._earlier_unfiled(ctx):
                self.waiting[spool_id] = ctx
                return LATER
            with filing_transaction(spool_id):
                if processing_state(spool_id) != state:
                    self._done(spool_id, release=True)
                    return None  # another process got there first
                if self.claims:
                    claims.release_spool(spool_id)
                if not plan_current(ctx):  # other mail filed meanwhile changed the decision: again
                    log.debug("message.decided_again", spool_id=spool_id, action=ctx.plan.action)
                    ctx = self._decide(spool, previous=ctx)
                apply_decision(ctx)
                if state == SPOOL_QUEUED:  # a replay: a processing error it had is resolved now
                    close_triage(spool_id, REASON_PROCESSING_ERROR)
            self._done(spool_id)
            if ctx.plan.outgoing:
                wakeup.notify(wakeup.DELIVER)
            self._log(ctx)
            self._recovered()
            return ctx
        except Exception as exc:
            if not self._deferred(spool_id, exc):
                self._shunt(spool_id, exc)
            return None
        finally:
            clear_message()

    def _done(self, spool_id, release=False):
        """The entry needs nothing more from this process; `release`: drop its claim (PostgreSQL)."""
        self.waiting.pop(spool_id, None)
        if self.claims:
            self.claims.done(spool_id)
            if release:
                claims.release_spool(spool_id)

    def _deferred(self, spool_id, exc):
        """Whether `exc` is a storage fault: then the entry stays queued and a retry is planned."""
        fault = transient_fault(exc)
        if fault is None:
            return False
        self.retry_delay = min(max(self.retry_delay * 2, RETRY_INITIAL), RETRY_MAX)
        self.retry_at = self.monotonic() + self.retry_delay
        log.warning("storage.fault", spool_id=spool_id, cause=describe(fault), retry_in=self.retry_delay)
        return True

    def _recovered(self):
        if self.retry_delay:
            log.info("storage.recovered", after=self.retry_delay)
            self.retry_delay = 0.0

    @property
    def waiting_for_storage(self):
        return self.monotonic() < self.retry_at

    def _log(self, ctx):
        summary, plan = ctx.summary(), ctx.plan
        log.info(EVENTS.get(plan.action, "message.processed"), action=plan.action, ticket=plan.ticket_number,
                 reason=plan.reason, public=summary["public"], sender=summary["sender"],
                 recipients=summary["recipients"], outgoing=len(plan.outgoing), notes=plan.notes or None,
                 link=plan.link or None)

    def _shunt(self, spool_id, exc):
        reason = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc(limit=8)
        try:
            self._record_shunt(spool_id, reason)
        except Exception as fault:
            if not self._deferred(spool_id, fault):  # the message is tried again, and shunted then
                raise
            return
        self._done(spool_id)
        log.error("message.shunted", spool_id=spool_id, reason=reason, traceback=trace)

    def _record_shunt(self, spool_id, reason):
        spool = spool_entry(spool_id)
        subject, from_addr = "", spool.mail_from or ""
        try:  # best effort, so that `inbound list` shows what the mail was
            from connector.mail.parse import parse_message
            parsed = parse_message(bytes(spool.raw))
            subject, from_addr = parsed.subject or "", parsed.from_addr or from_addr
        except Exception:
            pass
        now = self.services.clock()
        previous = processing(spool_id)
        attempts = (previous.attempts if previous else 0) + 1
        with database.atomic():
            record_processing(spool, SPOOL_SHUNTED, None, reason, None, now, self.services.settings.node_name,
                              attempts=attempts)
            if self.claims:
                claims.release_spool(spool_id)
            bulk.insert(TriageItem, id=next_triage_id(), spool_id=spool_id, status=TRIAGE_NEEDS_ATTENTION, reason=REASON_PROCESSING_ERROR,
                        detail=reason, subject=subject, from_addr=from_addr, ticket_number=None,
                        received_at=spool.received_at)

    def waiting_ids(self):
        """What to process next. The floor moves past everything seen processed, so an idle
        worker's look costs an index lookup, not a scan of the whole spool."""
        if self.claims:
            return self._claimed_ids()
        top = last_spool_id()  # before the scan: an id committed later is higher
        ids = unprocessed_spool_ids(self.floor, BATCH, self.partition)
        self.floor = ids[0] if ids else max(self.floor, top + 1)
        return sorted(set(ids) | set(requeued_spool_ids(BATCH, self.partition)))

    def _claimed_ids(self):
        """PostgreSQL: the entries this process holds, claiming more (`connector.store.claims`),
        scanned from a floor that trails by SETTLE seconds."""
        now = self.monotonic()
        if now >= self.rescan_at:
            self.rescan_at, self.floor = now + RESCAN_EVERY, 0
            self.floor_marks.clear()
        if not self.floor_marks or now - self.floor_marks[-1][0] >= SETTLE / 4:
            top = last_spool_id()
            self.floor_marks.append((now, first_unfiled(self.floor) or top + 1))
        while self.floor_marks and now - self.floor_marks[0][0] >= SETTLE:
            self.floor = max(self.floor, self.floor_marks.popleft()[1])
        ids, taken_back = self.claims.take(self.floor)
        for node, spool_ids in taken_back.items():
            log.info("filing.claim_expired", claimed_by=node, spool_ids=spool_ids)
        return ids

    def drain(self, stop=lambda: False):
        """Process everything waiting now; returns how many entries were looked at."""
        count = 0
        patience = self.monotonic() + ORDER_PATIENCE
        while not stop() and not self.waiting_for_storage:
            try:
                ids = self.waiting_ids()
            except Exception as exc:
                if not self._deferred(None, exc):
                    raise
                return count
            if not ids:
                return count
            progress = count
            for spool_id in ids:
                if stop() or self.waiting_for_storage:  # a storage fault: the rest would fail too
                    return count
                if spool_id in self.waiting:
                    continue  # filed by _file_waiting, in order
                count += self.process(spool_id) is not LATER
                count += self._file_waiting()
            if count > progress:
                patience = self.monotonic() + ORDER_PATIENCE
            elif self.monotonic() >= patience:  # another process is not filing: idle, look later
                return count
            else:  # only entries waiting for another process: give it a moment
                time.sleep(ORDER_WAIT)
                count += self._file_waiting()
        return count

    def _file_waiting(self):
        """File, in order, the waiting entries that need not wait any more; how many."""
        filed = 0
        for spool_id in sorted(self.waiting):
            if self.process(spool_id) is LATER:
                break  # the ones after it wait for the same earlier entry
            filed += 1
        return filed


    def close(self):
        """Stopping (or replaced at a reload): the entries held go back to the pool now, not
        when their lease runs out (PostgreSQL)."""
        if self.claims:
            try:
                self.claims.release_all()
            except Exception as exc:  # the store is away: the leases run out by themselves
                log.warning("filing.claims_kept", error=f"{type(exc).__name__}: {exc}")


def requeue(spool_id):
    """Ask for an entry to be processed again; the worker picks it up next."""
    queued = requeue_entry(spool_id)
    wakeup.notify(wakeup.WORKER)
    return queued
