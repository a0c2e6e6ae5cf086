"""Deliver outbox rows to the relay (or a maildir): the last step of the flow.

Rows are attempted one at a time, and the outcome of each is committed as
soon as the relay has answered for it, so a crash re-sends at most the one
mail in flight. Each row stands alone: whatever goes wrong with one (a
refusal, an address the relay cannot take, a fault of ours) affects only
that row, and the SMTP session is reset before the next.

Results are kept per envelope recipient (`OutboxEntry.recipients`), as
Postfix does: a recipient accepted is never sent to again; one refused
permanently (5xx) is recorded on the row; one refused temporarily (4xx,
452 too many recipients, no answer) is retried alone after
`retry_initial * 2**(attempts-1)` seconds, at most `retry_max`, until
`give_up_after` (counted from `queued_at`, else `created_at`) turns it into
a refusal. A row is `deferred` while a recipient waits, then `sent` when
some recipient accepted it, else `failed`.

The envelope sender is the row's VERP address (`connector.mail.verp`,
`[outbound] verp`), made here from the row's id; the row keeps the plain
one it was planned with. A recipient accepted lifts the hard-bounce block
of that address (`connector.store.blocks`): it works again. A recipient
refused for a reason about them (no such user, mailbox full) is reported into
our own spool as a bounce (`connector.outbound.refusals`), so it blocks and
informs exactly like a bounce that comes back later.

When no session with the relay can be opened at all, that row is deferred
and the others wait `retry_initial` before the next try: a relay that is
down delays mail, it never loses it.

On PostgreSQL the delivery processes of several nodes share the outbox: each
row is claimed before the relay is contacted (`connector.store.claims`: the
node's name, a lease of `[node] failover_seconds`, committed first), renewed
by a thread every third of the lease while the process lives (a slow send
keeps its row), and released in the transaction that records the outcome. A
row whose holder died is taken back by another node once the lease ran out
(`outbox.claim_expired`): a node killed after the relay's 250 and before its
commit causes that one mail to be sent again, once.
"""

import re
import threading
import time

from connector.log import get_logger
from connector.mail import verp
from connector.outbound import refusals
from connector.outbound.maildir import MaildirTransport
from connector.outbound.replies import ACCEPTED, DEFERRED, REFUSED, Reply, no_reply
from connector.outbound.smtp import RelayUnavailable, SMTPTransport
from connector.store import blocks, bulk, claims, dialect, outbox, wakeup
from connector.store.models import (
    OUTBOX_ACTIVE, OUTBOX_DEFERRED, OUTBOX_FAILED, OUTBOX_SENT, DeliveryAttempt, OutboxEntry, database)

log = get_logger("outbox")

BATCH = 100  # rows looked up per round; each is still committed on its own
# A line break or control character in an envelope address would smuggle SMTP commands
# (smtplib sends it as is) or headers (maildir): such a recipient is refused, never sent.
UNSAFE_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
BAD_ADDRESS = "5.1.3 the address contains a space, a control character or <>"
NO_BODY = "internal error: the mail's body is missing from outbox_body"


def make_transport(settings):
    if settings.mode == "maildir":
        return MaildirTransport(settings.maildir)
    return SMTPTransport(settings)


def recipients_to_try(entry):
    """The envelope recipients neither accepted nor refused yet."""
    states = entry.recipients or {}
    return [a for a in entry.rcpt if states.get(a, {}).get("state") not in (ACCEPTED, REFUSED)]


def problems(entry_rcpt, states):
    """`address, address: reply` for the recipients not accepted, grouped by reply (the row's last_error)."""
    by_reply = {}
    for address in entry_rcpt:
        state = states.get(address)
        if state and state["state"] != ACCEPTED:
            by_reply.setdefault(state["reply"], []).append(address)
    return "; ".join(f"{', '.join(addresses)}: {reply}" for reply, addresses in by_reply.items()) or None


class Renewer:
    """A thread renewing this process's outbox claims every third of the lease (PostgreSQL)."""

    def __init__(self, outbox_claims):
        self.claims = outbox_claims
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="claim-renewer", daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.wait(self.claims.lease / 3):
            try:
                self.claims.renew()
            except Exception as exc:  # the store is away: the recording will say whether the row stayed ours
                log.warning("outbox.claim_not_renewed", error=f"{type(exc).__name__}: {exc}")

    def stop(self):
        self.stopped.set()


class Delivery:
    def __init__(self, settings, clock=time.time, transport=None, claimed=None):
        self.settings = settings
        self.clock = clock
        self.transport = transport or make_transport(settings)
        self.verp = verp.of(settings) if settings.verp else None
        self.paused_until = 0.0  # the relay could not be reached: no new session before this
        self.unrecorded = None   # an outcome the relay gave that the store refused to record (see run_once)
        # PostgreSQL: the outbox claims of this process (kept across a reload: `claimed`) and their renewer
        self.claims, self.renewer = claimed or (None, None)
        if self.claims is None and dialect.is_postgres():
            self.claims = claims.OutboxClaims(settings.node_name, claims.lease_of(settings), outbox.DueRow,
                                              outbox.DUE_FIELDS)
            self.renewer = Renewer(self.claims)
        if self.claims is not None:
            self.claims.lease = claims.lease_of(settings)

    @property
    def claimed(self):
        """What a reloaded Delivery takes over: the claims and their renewer."""
        return self.claims, self.renewer

    def due(self, limit=BATCH):
        return outbox.due(self.clock(), limit)

    def run_once(self, stop=lambda: False):
        """Attempt the due rows one by one; returns how many were attempted.

        Nothing new is sent while an outcome is unrecorded: a mail the relay
        accepted whose outcome the store could not take (disk full, locked
        past the busy timeout) would otherwise be sent again at every round.
        That outcome is recorded first; until it can be, this raises again.
        """
        if self.unrecorded is not None:
            self._record(*self.unrecorded)
            self.unrecorded = None
        if self.clock() < self.paused_until:
            return 0
        if self.claims is not None:
            return self._run_claimed(stop)
        due = self.due()
        if not due:
            self.transport.close_idle()
        for attempted, entry in enumerate(due, 1):
            if stop():
                return attempted - 1
            active, raw = outbox.sendable(entry.id)
            if not active:  # cancelled (or done by another) since the batch was read
                continue
            if not self.attempt(entry, raw):
                return attempted
        return len(due)

    def _run_claimed(self, stop):
        """PostgreSQL: claim the due rows one at a time (each claim committed before the relay
        is contacted) and attempt each; returns how many were attempted."""
        for attempted in range(BATCH):
            if stop():
                return attempted
            entry, previous = self.claims.next(self.clock())
            if entry is None:
                if not attempted:
                    self.transport.close_idle()
                return attempted
            if previous is not None:
                log.info("outbox.claim_expired", outbox_id=entry.id, message_id=entry.message_id,
                         claimed_by=previous)
            active, raw = outbox.sendable(entry.id)
            if not active:  # cancelled since it was claimed: the claim goes, nothing is sent
                with database.atomic():
                    self.claims.release(entry.id)
                continue
            if not self.attempt(entry, raw):
                return attempted + 1
        return BATCH

    def envelope_sender(self, entry):
        """The row's VERP address (the null sender stays null), or its planned envelope sender."""
        return self.verp.address(entry.id) if self.verp is not None and entry.mail_from else entry.mail_from

    def _send(self, entry, todo, raw, sender):
        """{recipient: Reply}, and whether the relay could be reached."""
        if raw is None:  # nothing to send: this row alone waits, and gives up in time
            return dict.fromkeys(todo, no_reply(NO_BODY)), True
        if UNSAFE_ADDRESS.search(entry.mail_from):
            return dict.fromkeys(todo, Reply(553, f"{BAD_ADDRESS}: sender {entry.mail_from!r}")), True
        unsafe = {a: Reply(553, BAD_ADDRESS) for a in todo if UNSAFE_ADDRESS.search(a)}
        todo = [a for a in todo if a not in unsafe]
        if not todo:
            return unsafe, True
        try:
            return {**unsafe, **self.transport.send(sender, todo, raw)}, True
        except RelayUnavailable as exc:
            return dict.fromkeys(todo, no_reply(str(exc))), False
        except Exception as exc:  # a fault of ours with this one mail: it alone waits, the session restarts
            log.exception("outbox.error", outbox_id=entry.id, message_id=entry.message_id)
            self.transport.close()
            return dict.fromkeys(todo, no_reply(f"internal error: {type(exc).__name__}: {exc}")), True

    def attempt(self, entry, raw):
        """Send `entry` (its mail: `raw`, None when it has none) to the recipients still to try and
        commit the outcome; False if the relay is down."""
        sender = self.envelope_sender(entry)
        replies, reachable = self._send(entry, recipients_to_try(entry), raw, sender)
        now = self.clock()
        states = dict(entry.recipients or {})
        for address, reply in replies.items():
            states[address] = {"state": reply.outcome, "reply": str(reply), "at": now}
        if now - (entry.queued_at or entry.created_at) >= self.settings.give_up_after:
            for address, state in states.items():
                if state["state"] == DEFERRED:
                    state.update(state=REFUSED, reply=f"not delivered within give_up_after "
                                                      f"({self.settings.give_up_after:g} s): {state['reply']}")
        outcomes = {states[a]["state"] for a in entry.rcpt}
        attempts = entry.attempts + 1
        fields = {"attempts": attempts, "recipients": states, "last_error": problems(entry.rcpt, states)}
        if DEFERRED in outcomes:
            delay = min(self.settings.retry_initial * 2 ** (attempts - 1), self.settings.retry_max)
            fields.update(status=OUTBOX_DEFERRED, next_attempt_at=now + delay)
        else:
            delay = None
            fields.update(status=OUTBOX_SENT if ACCEPTED in outcomes else OUTBOX_FAILED,
                          sent_at=now if ACCEPTED in outcomes else None,
                          sent_by=self.settings.node_name if ACCEPTED in outcomes else None)
        try:
            self._record(entry, raw, sender, fields, replies, now)
        except Exception:
            self.unrecorded = (entry, raw, sender, fields, replies, now)
            raise
        self._log(entry, fields, replies, delay)
        if not reachable:
            self.paused_until = now + self.settings.retry_initial
            log.warning("outbox.relay_unavailable", error=fields["last_error"],
                        retry_in=round(self.settings.retry_initial, 3))
        return reachable

    def _record(self, entry, raw, sender, fields, replies, now):
        """The row's new state and the attempt, in one transaction, right after the relay answered
        (releasing the row's claim on PostgreSQL)."""
        with database.atomic():
            if self.claims is not None and not self.claims.release(entry.id):
                log.warning("outbox.claim_lost", outbox_id=entry.id, message_id=entry.message_id)
            if not bulk.update(OutboxEntry, entry.id, only_if=("status", OUTBOX_ACTIVE), **fields):
                # cancelled while in flight: the operator's decision stands, what happened is kept
                bulk.update(OutboxEntry, entry.id, **{k: fields[k] for k in ("attempts", "recipients", "last_error")})
            bulk.insert(DeliveryAttempt, outbox=entry.id, at=now,
                        ok=all(r.outcome == ACCEPTED for r in replies.values()),
                        detail="; ".join(f"{a}: {r}" for a, r in replies.items()))
            lifted = blocks.lift_hard([a for a, r in replies.items() if r.outcome == ACCEPTED], now)
            reported = refusals.report(entry, raw or b"", replies, sender, self.settings, now)
        for address in lifted:
            log.info("block.lifted", target=address, by="delivery", outbox_id=entry.id)
        if reported:
            log.info("outbox.refusal_reported", outbox_id=entry.id, recipients=reported)
            wakeup.notify(wakeup.WORKER)

    @staticmethod
    def _log(entry, fields, replies, delay):
        by_outcome = {}
        for address, reply in replies.items():
            by_outcome.setdefault(reply.outcome, {})[address] = str(reply)
        common = {"outbox_id": entry.id, "message_id": entry.message_id, "ticket_id": entry.ticket_id,
                  "kind": entry.kind, "attempts": fields["attempts"],
                  "accepted": sorted(by_outcome.get(ACCEPTED, {})) or None,
                  "refused": by_outcome.get(REFUSED), "error": fields["last_error"]}
        if fields["status"] == OUTBOX_DEFERRED:
            log.warning("outbox.deferred", **common, deferred=by_outcome.get(DEFERRED), retry_in=round(delay, 3))
        elif fields["status"] == OUTBOX_SENT:
            log.info("outbox.sent", **common)
        else:
            log.error("outbox.failed", **common)

    def close(self):
        """Close the session, and stop renewing the claims (at the process's end, not a reload)."""
        self.transport.close()
        if self.renewer is not None:
            self.renewer.stop()
