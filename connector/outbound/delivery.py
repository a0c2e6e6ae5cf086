"""Deliver outbox rows to the relay (or a maildir), with retries and backoff.

Every attempt is recorded. A temporary failure (connection refused, 4xx)
reschedules the row after `retry_initial * 2**(attempts-1)` seconds, at most
`retry_max`; a permanent refusal (5xx) or a mail older than `give_up_after`
marks it failed. A relay that is down delays mail; it never loses it.
"""

import os
import smtplib
import socket
import time
from pathlib import Path

from connector.log import get_logger
from connector.store import bulk
from connector.store.models import (
    OUTBOX_FAILED, OUTBOX_PENDING, OUTBOX_SENT, DeliveryAttempt, OutboxEntry, database)

log = get_logger("outbox")


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class SMTPTransport:
    """One reused connection to the relay."""

    def __init__(self, host, port, timeout, local_hostname):
        self.host, self.port, self.timeout, self.local_hostname = host, port, timeout, local_hostname
        self.conn = None

    def send(self, mail_from, rcpt, raw):
        for attempt in (1, 2):  # a reused connection may have been closed by the relay
            try:
                if self.conn is None:
                    self.conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                                             local_hostname=self.local_hostname)
                refused = self.conn.sendmail(mail_from, rcpt, raw)
                return "; ".join(f"{a}: {c} {m!r}" for a, (c, m) in refused.items())
            except smtplib.SMTPServerDisconnected as exc:
                self.close()
                if attempt == 2:
                    raise TemporaryFailure(f"relay disconnected: {exc}") from None
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                detail = "; ".join(f"{a}: {c} {m!r}" for a, (c, m) in exc.recipients.items())
                if all(code >= 500 for code in codes):
                    raise PermanentFailure(detail) from None
                raise TemporaryFailure(detail) from None
            except smtplib.SMTPResponseException as exc:
                self._reset()
                cls = PermanentFailure if exc.smtp_code >= 500 else TemporaryFailure
                raise cls(f"{exc.smtp_code} {exc.smtp_error!r}") from None
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                raise TemporaryFailure(f"relay {self.host}:{self.port}: {exc}") from None
        return ""

    def _reset(self):
        try:
            self.conn.rset()
        except Exception:
            self.close()

    def close(self):
        if self.conn is not None:
            try:
                self.conn.quit()
            except Exception:
                pass
        self.conn = None


class MaildirTransport:
    """Writes each mail as a file in `maildir/new` (tmp, fsync, rename)."""

    def __init__(self, path):
        self.path = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def send(self, mail_from, rcpt, raw):
        name = f"{time.time():.6f}.{os.getpid()}_{os.urandom(4).hex()}.{socket.gethostname()}"
        envelope = (f"X-Envelope-From: <{mail_from}>\r\n"
                    + "".join(f"X-Envelope-To: <{a}>\r\n" for a in rcpt)).encode()
        data = (envelope + raw).replace(b"\r\n", b"\n")
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path / "new" / name)
        except OSError as exc:
            raise TemporaryFailure(f"maildir {self.path}: {exc}") from None
        return ""

    def close(self):
        pass


def make_transport(settings):
    if settings.mode == "maildir":
        return MaildirTransport(settings.maildir)
    return SMTPTransport(settings.relay_host, settings.relay_port, settings.timeout, settings.hostname)


class Delivery:
    def __init__(self, settings, clock=time.time, transport=None):
        self.settings = settings
        self.clock = clock
        self.transport = transport or make_transport(settings)

    def due(self, limit=100):
        return list(OutboxEntry.select().where((OutboxEntry.status == OUTBOX_PENDING)
                                               & (OutboxEntry.next_attempt_at <= self.clock()))
                    .order_by(OutboxEntry.next_attempt_at, OutboxEntry.id).limit(limit))

    def run_once(self):
        """Attempt every due row, then record the outcomes in one transaction.

        Returns how many rows were attempted. A crash between a send and its
        record means the mail is sent again later: at least once, never lost.
        """
        outcomes = []
        for entry in self.due():
            outcome = self.attempt(entry)
            outcomes.append(outcome)
            if outcome[1] == OUTBOX_PENDING:
                break  # the relay is failing: keep the rest for the next round
        if outcomes:
            with database.atomic():
                for entry, status, error, detail, now in outcomes:
                    bulk.update(OutboxEntry, entry.id, status=status, attempts=entry.attempts,
                                next_attempt_at=entry.next_attempt_at, last_error=entry.last_error,
                                sent_at=entry.sent_at)
                bulk.insert_many(DeliveryAttempt, [{"outbox": e.id, "at": now, "ok": error is None,
                                                    "detail": error or detail}
                                                   for e, status, error, detail, now in outcomes])
        return len(outcomes)

    def attempt(self, entry):
        """One delivery attempt: (entry, new status, error, detail, time); `entry` is updated."""
        error, permanent, detail = None, False, ""
        try:
            detail = self.transport.send(entry.mail_from, entry.rcpt, bytes(entry.raw))
        except PermanentFailure as exc:
            error, permanent = str(exc), True
        except TemporaryFailure as exc:
            error = str(exc)
        now = self.clock()
        entry.attempts += 1
        if error is None:
            entry.status, entry.sent_at, entry.last_error = OUTBOX_SENT, now, detail or None
            log.info("outbox.sent", outbox_id=entry.id, message_id=entry.message_id, ticket_id=entry.ticket_id,
                     rcpt=entry.rcpt, kind=entry.kind, attempts=entry.attempts, refused=detail or None)
        elif permanent or now - entry.created_at >= self.settings.give_up_after:
            entry.status, entry.last_error = OUTBOX_FAILED, error
            log.error("outbox.failed", outbox_id=entry.id, message_id=entry.message_id, rcpt=entry.rcpt,
                      attempts=entry.attempts, error=error, permanent=permanent)
        else:
            delay = min(self.settings.retry_initial * 2 ** (entry.attempts - 1), self.settings.retry_max)
            entry.next_attempt_at, entry.last_error = now + delay, error
            log.warning("outbox.deferred", outbox_id=entry.id, message_id=entry.message_id, rcpt=entry.rcpt,
                        attempts=entry.attempts, error=error, retry_in=round(delay, 3))
        return entry, entry.status, error, detail, now

    def close(self):
        self.transport.close()
