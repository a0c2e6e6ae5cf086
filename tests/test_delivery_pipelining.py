"""Delivery to a relay that offers PIPELINING (RFC 2920), as Postfix does.

Every test of test_delivery.py runs again here against the same scripted relay
offering PIPELINING, so refusals of MAIL, of some or all recipients, 452 too
many recipients and lost connections mean the same when the commands go in
one write. And the client does pipeline: the relay finds the RCPT commands
already sent when it answers MAIL (before, MAIL waited for its reply).
"""

import pytest

from relays import ScriptedRelay, queue, row
from test_delivery import *  # noqa: F401,F403 -- the delivery tests, collected again with `relay` below
from test_delivery import delivery_for


class PipeliningRelay(ScriptedRelay):
    """A ScriptedRelay that offers PIPELINING and notes, at each MAIL, whether RCPT was already sent."""

    class Handler(ScriptedRelay.Handler):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            return responses[:-1] + ["250-PIPELINING", responses[-1]]

        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            self.sink.rcpt_sent_before_mail_reply.append(b"RCPT TO:" in bytes(server._reader._buffer))
            return await super().handle_MAIL(server, session, envelope, address, mail_options)

        async def handle_DATA(self, server, session, envelope):
            if self.sink.data_replies:
                return self.sink.data_replies.pop(0)
            return await super().handle_DATA(server, session, envelope)

    def __init__(self, *args, data_replies=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.rcpt_sent_before_mail_reply = []
        self.data_replies = list(data_replies)


@pytest.fixture
def relay():
    relays = []

    def start(**kwargs):
        relays.append(PipeliningRelay(**kwargs).start())
        return relays[-1]
    yield start
    for r in relays:
        r.stop()


def test_mail_rcpt_and_data_go_in_one_write(tmp_path, relay, clock):
    sink = relay(replies={"bob@example.com": ["550 5.1.1 no such user"] * 2})
    delivery = delivery_for(tmp_path, sink, clock)
    ids = queue(["jane@example.com", "bob@example.com"], clock.now, count=2)

    assert delivery.run_once() == 2
    assert sink.rcpt_sent_before_mail_reply == [True, True]
    assert [m[1] for m in sink.messages] == [["jane@example.com"], ["jane@example.com"]]
    entry = row(ids[0])
    assert entry.status == "sent" and entry.recipients["bob@example.com"]["state"] == "refused"
    delivery.close()


def test_data_refused_after_pipelined_recipients(tmp_path, relay, clock):
    sink = relay(data_replies=["554 5.6.0 message refused"])
    delivery = delivery_for(tmp_path, sink, clock)
    first, second = queue(["jane@example.com"], clock.now, count=2)

    assert delivery.run_once() == 2
    assert (row(first).status, row(first).last_error) == ("failed", "jane@example.com: 554 5.6.0 message refused")
    assert row(second).status == "sent"   # the session was reset and carries on
    assert len(sink.messages) == 1
    delivery.close()


def test_a_body_with_dots_at_line_starts_arrives_whole(tmp_path, relay, clock):
    from connector.store import outbox
    sink = relay()
    delivery = delivery_for(tmp_path, sink, clock)
    raw = b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nlast line without CRLF"
    outbox.queue(dict(ticket=None, kind="notice", mail_from="support@example.com", rcpt=["jane@example.com"],
                      to=["jane@example.com"], subject="dots", message_id="<d@example.com>", raw=raw,
                      status="pending", attempts=0, next_attempt_at=clock.now, created_at=clock.now))

    assert delivery.run_once() == 1
    assert sink.messages[0][2] == raw + b"\r\n"
    delivery.close()
