"""Relays for the delivery tests: a real aiosmtpd server on loopback whose answers are scripted."""

import os
import time
from pathlib import Path

from aiosmtpd.controller import Controller

from conftest import Sink
from connector.settings import load_settings
from connector.store import outbox
from connector.store.db import open_store
from connector.store.models import OutboxEntry


class ScriptedRelay(Sink):
    """`replies`: {address: [reply, ...]} answered to RCPT in turn, then 250; `max_rcpts`: 452 beyond.

    SMTPUTF8 is offered only with enable_SMTPUTF8=True."""

    class Handler(Sink.Handler):
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            if self.sink.mail_replies:
                reply = self.sink.mail_replies.pop(0)
                if reply:
                    return reply
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            self.sink.mail_options.append(list(mail_options))
            return "250 OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            script = self.sink.replies.get(address)
            if script:
                return script.pop(0)
            if self.sink.max_rcpts and len(envelope.rcpt_tos) >= self.sink.max_rcpts:
                return "452 4.5.3 Error: too many recipients"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            self.sink.sessions.append(session)
            return await super().handle_DATA(server, session, envelope)

    def __init__(self, port=None, replies=None, max_rcpts=None, mail_replies=(), **server):
        super().__init__(port)
        self.mail_replies = list(mail_replies)  # answers to MAIL FROM in turn (None: accept)
        self.replies = {a: list(r) for a, r in (replies or {}).items()}
        self.max_rcpts = max_rcpts
        self.server = {"enable_SMTPUTF8": False, **server}  # aiosmtpd's Controller offers it unless told
        self.mail_options = []
        self.sessions = []

    def start(self):
        self.controller = Controller(self.Handler(self), hostname="127.0.0.1", port=self.port, **self.server)
        self.controller.start()
        return self

    def rcpt_counts(self):
        counts = {}
        for _, rcpts, _ in self.messages:
            for address in rcpts:
                counts[address] = counts.get(address, 0) + 1
        return counts


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def write_ini(path, relay_port, log_level="debug", **outbound):
    """A connector.ini for delivery alone; `outbound` keys override the defaults below."""
    path = Path(path)
    keys = {"mode": "smtp", "relay": f"127.0.0.1:{relay_port}", "retry_initial": "10", "retry_max": "60",
            "timeout": "5", **outbound}
    (path / "config").mkdir(parents=True, exist_ok=True)
    ini = path / "connector.ini"
    ini.write_text(f"[connector]\ndatabase = var/connector.db\nlog_level = {log_level}\n[outbound]\n"
                   + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    return ini


def store_and_settings(path, relay_port, **keys):
    settings = load_settings(write_ini(path, relay_port, **keys))
    open_store(settings.database)
    return settings


def queue(rcpt, now, mail_from="support@example.com", subject="Hello", count=1):
    """Outbox rows as the pipeline writes them; returns their ids."""
    ids = []
    for _ in range(count):
        message_id = f"<{time.time_ns()}.{os.getpid()}@example.com>"
        raw = (f"From: {mail_from}\r\nTo: {', '.join(rcpt)}\r\nSubject: {subject}\r\n"
               f"Message-ID: {message_id}\r\n\r\nHello.\r\n").encode()
        ids.append(outbox.queue(dict(ticket=None, kind="notice", mail_from=mail_from, rcpt=list(rcpt),
                                     to=list(rcpt), subject=subject, message_id=message_id, raw=raw,
                                     status="pending", attempts=0, next_attempt_at=now, created_at=now)))
    return ids


def row(entry_id):
    return OutboxEntry.get_by_id(entry_id)

