"""Drive the pipeline over queued spool entries; shunt what raises.

Each entry is processed in one IMMEDIATE transaction that first re-reads its
state, so two processes (the daemon's worker and a `replay`) never file the
same entry twice. An exception rolls the transaction back and marks the entry
`shunted` with its reason; a triage item (`needs_attention`,
`processing_error`) makes it visible, and `connector inbound replay ID`
queues it again.
"""

import time
import traceback

from connector.log import bind_message, clear_message, get_logger
from connector.outbound.compose import Templates
from connector.pipeline import decide
from connector.pipeline.apply import apply_decision
from connector.pipeline.context import R_PROCESSING_ERROR, Context
from connector.store.models import (
    SPOOL_QUEUED, SPOOL_SHUNTED, TRIAGE_CLOSED, TRIAGE_NEEDS_ATTENTION, SpoolEntry, TriageItem, database)

log = get_logger("pipeline")

EVENTS = {
    "new_ticket": "ticket.created",
    "follow_up": "message.filed",
    "internal": "message.filed",
    "triage": "message.triaged",
    "duplicate": "message.duplicate",
    "ignored_automatic": "message.ignored",
    "contact_only": "contact.created",
}


class Runner:
    def __init__(self, services):
        self.services = services
        self.templates = Templates(services.settings.folder_candidates("templates"))

    def dry_run(self, spool):
        """The decision for an unsaved spool entry; writes nothing."""
        return decide(Context(self.services, spool))

    def process(self, spool_id):
        """Process one queued entry; returns the Context, or None when it was not queued."""
        try:
            with database.atomic(lock_type="IMMEDIATE"):
                spool = SpoolEntry.get_or_none(SpoolEntry.id == spool_id)
                if spool is None or spool.state != SPOOL_QUEUED:
                    return None
                bind_message(spool_id=spool.id)
                ctx = decide(Context(self.services, spool))
                bind_message(message_id=ctx.parsed.message_id)
                apply_decision(ctx, self.templates)
                TriageItem.update(status=TRIAGE_CLOSED).where(
                    (TriageItem.spool == spool) & (TriageItem.reason == R_PROCESSING_ERROR)).execute()
            self._log(ctx)
            return ctx
        except Exception as exc:
            self._shunt(spool_id, exc)
            return None
        finally:
            clear_message()

    def _log(self, ctx):
        summary = ctx.summary()
        log.info(EVENTS.get(ctx.action, "message.processed"), action=ctx.action, ticket=ctx.ticket_number,
                 reason=ctx.reason, public=summary["public"], sender=summary["sender"],
                 recipients=summary["recipients"], outgoing=len(ctx.outgoing))

    def _shunt(self, spool_id, exc):
        reason = f"{type(exc).__name__}: {exc}"
        log.error("message.shunted", spool_id=spool_id, reason=reason,
                  traceback=traceback.format_exc(limit=8))
        with database.atomic():
            spool = SpoolEntry.get_by_id(spool_id)
            spool.state, spool.reason, spool.attempts = SPOOL_SHUNTED, reason, spool.attempts + 1
            spool.processed_at = self.services.clock()
            spool.save()
            TriageItem.create(spool=spool, status=TRIAGE_NEEDS_ATTENTION, reason=R_PROCESSING_ERROR,
                              detail=reason, subject="", from_addr=spool.mail_from or "",
                              received_at=spool.received_at)

    def queued_ids(self, limit=200):
        return [row.id for row in SpoolEntry.select(SpoolEntry.id).where(SpoolEntry.state == SPOOL_QUEUED)
                .order_by(SpoolEntry.id).limit(limit)]

    def drain(self, stop=lambda: False):
        """Process everything queued now; returns how many entries were looked at."""
        count = 0
        while not stop():
            ids = self.queued_ids()
            if not ids:
                return count
            for spool_id in ids:
                if stop():
                    return count
                self.process(spool_id)
                count += 1
        return count


def requeue(spool_id):
    """Queue a shunted (or any) entry again; the worker processes it next."""
    return SpoolEntry.update(state=SPOOL_QUEUED).where(SpoolEntry.id == spool_id).execute() == 1


def wait_loop(runner, stop, idle=0.05):
    while not stop():
        if not runner.drain(stop):
            time.sleep(idle)
