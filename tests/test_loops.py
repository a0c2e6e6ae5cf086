"""Issues 9.2 and 12: loops the connector must stop, through real daemons.

`Peer` is the relay every connector sends to, and the Internet behind it:
mail for a connector's address (and its VERP bounce addresses) is delivered into that connector's SMTP port, and every responder
answers each mail it gets, at once, without any automatic-mail header (an
out-of-office that knows no RFC 3834); a `fresh` responder answers with a new
subject and no threading (each answer opens a ticket); a bouncer's mailbox
does not exist (its MTA returns a DSN to the envelope sender). Each test
starts the ping-pong with one person's mail, waits until no mail moves any
more, and counts what each address received: every loop stops within the
budget (`loop_mails_per_ticket_per_hour`, default 2, per (address, ticket);
`auto_responses_per_hour` per address), auto-emails (config/auto_emails.yaml)
in the loop included.
"""

import contextlib
import email
import queue
import smtplib
import threading
import time
from collections import Counter
from email import policy
from email.utils import make_msgid

import pytest

from conftest import Instance, Sink, make_mail
from dsn import dsn

CAP = 150                # answers the peer gives at most, so a loop that is not stopped ends too
PER_TICKET = 2           # the default loop_mails_per_ticket_per_hour


class Peer(Sink):
    class Handler(Sink.Handler):
        async def handle_DATA(self, server, session, envelope):
            reply = await super().handle_DATA(server, session, envelope)
            for rcpt in envelope.rcpt_tos:
                self.sink.work.put((envelope.mail_from, rcpt, envelope.original_content))
            return reply

    def __init__(self, responders=(), auto_submitted=False, fresh=False, bouncers=()):
        super().__init__()
        self.connectors = {}              # address -> SMTP port of the connector that owns it
        self.responders = set(responders)
        self.auto_submitted = auto_submitted
        self.fresh = fresh                # answers open a new thread: "Automatic reply N", no References
        self.bouncers = set(bouncers)     # addresses that do not exist: a DSN goes back
        self.bounces = 0
        self.answers = 0
        self.work = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        super().start()
        self.thread.start()

    def stop(self):
        self.work.put(None)
        super().stop()

    def _run(self):
        while (item := self.work.get()) is not None:
            try:
                self._handle(*item)
            finally:
                self.work.task_done()

    def _port(self, address):
        """The SMTP port of the connector owning `address` (a VERP address: of its domain), or None."""
        local, _, domain = address.rpartition("@")
        if address in self.connectors or not local.startswith("bounces+"):
            return self.connectors.get(address)
        return next((port for own, port in self.connectors.items() if own.rpartition("@")[2] == domain), None)

    def _handle(self, mail_from, rcpt, raw):
        if self._port(rcpt):              # the MTA delivers to the other connector
            return self._deliver(rcpt, mail_from, raw)
        if rcpt in self.bouncers and mail_from and self._port(mail_from) and self.bounces < CAP:
            self.bounces += 1
            return self._deliver(mail_from, "", dsn(rcpt))
        if rcpt not in self.responders or self.answers >= CAP:
            return
        original = email.message_from_bytes(raw, policy=policy.default)
        target = (original["Reply-To"] or original["From"]).addresses[0].addr_spec
        if target not in self.connectors:
            return
        self.answers += 1
        # unmarked: no header and no subject says it is automatic ("Out of office:" would, rules/automatic.yaml)
        prefix = "Out of office" if self.auto_submitted else "Re"
        threading = {"In-Reply-To": original["Message-ID"],
                     "References": f"{original['References'] or ''} {original['Message-ID']}".strip()}
        subject = f"{prefix}: {original['Subject']}"
        if self.fresh:
            subject, threading = f"Automatic reply {self.answers}", {}
        answer = make_mail(subject=subject, sender=rcpt, to=target,
                           body="I am out of the office until Monday.\n", message_id=make_msgid(domain="peer.example"),
                           headers={**threading, **({"Auto-Submitted": "auto-replied"} if self.auto_submitted else {})})
        self._deliver(target, rcpt, answer.as_bytes())

    def _deliver(self, rcpt, mail_from, raw):
        with smtplib.SMTP("127.0.0.1", self._port(rcpt), timeout=10) as smtp:
            smtp.sendmail(mail_from, [rcpt], raw)

    def received(self):
        """How many mails each address got from the connectors (not counting connector addresses)."""
        return Counter(r for _, rcpts, _ in self.messages for r in rcpts if not self._port(r))


def settle(peer, instances, quiet=4.0, timeout=90):
    """Wait until no mail moves: the peer has nothing to do, nothing new arrives for `quiet` s,
    and the worker has processed everything spooled (under load it may start late)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        state = (len(peer.messages), peer.work.unfinished_tasks,
                 tuple(len(i.spool_states()) for i in instances),
                 tuple(sum(o["status"] == "pending" for o in i.outbox()) for i in instances))
        if state != last:
            last, since = state, time.monotonic()
        elif state[1] == 0 and not any(state[3]) and time.monotonic() - since >= quiet \
                and not any(row[1] == "queued" for i in instances for row in i.spool_states()):  # worker done too
            return
        time.sleep(0.3)
    raise AssertionError(f"mail still moving after {timeout}s: {peer.received()}")


@pytest.fixture
def peer_factory():
    peers = []

    def make(*args, **kw):
        peer = Peer(*args, **kw)
        peer.start()
        peers.append(peer)
        return peer
    yield make
    for peer in peers:
        peer.stop()


def start(inst, peer, public="support@example.com", notifications="notifications@example.com"):
    peer.connectors[public] = inst.port
    peer.connectors[notifications] = inst.port
    return inst.start()


def report(name, peer):
    counts = peer.received()
    print(f"\n{name}: {sum(counts.values())} mails out, {peer.answers} answers: {dict(counts)}")
    return counts


@pytest.mark.parametrize("responders, seconds", [
    (("ann@acme.example",), "30"),                                         # the customer's out-of-office
    (("jane@example.com", "bob@example.com"), "30"),                       # the staff's
    (("ann@acme.example", "jane@example.com", "bob@example.com"), "30"),   # both
    (("ann@acme.example", "jane@example.com", "bob@example.com"), "0"),    # a slow robot: its text repeats
], ids=["customer", "staff", "customer-and-staff", "repeated-text-only"])
def test_out_of_office_without_rfc3834_headers_stops_within_the_budget(tmp_path, peer_factory, responders, seconds):
    peer = peer_factory(responders)
    inst = start(Instance(tmp_path, peer.port, connector__loop_reply_seconds=seconds), peer)
    try:
        inst.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
        settle(peer, [inst])
        counts = report("out of office " + "+".join(responders), peer)
        # one copy caused by a person, then at most the loop budget per (address, ticket);
        # without the speed rule each robot's first answer is not yet a repetition
        free = len(responders) - 1 if seconds == "0" else 0
        assert all(n <= 1 + free + PER_TICKET for n in counts.values()), counts
        assert len(inst.tickets()) == 1
        filed = inst.ticket(1)["message_count"]
        assert filed == len([s for s in inst.spool_states()]) + 1     # every answer filed, nothing lost
    finally:
        inst.stop()


def test_people_writing_quickly_and_differently_get_every_copy(tmp_path, peer_factory):
    """The repeated-text rule does not hold back a conversation (speed rule off here)."""
    peer = peer_factory()
    inst = start(Instance(tmp_path, peer.port, connector__loop_reply_seconds="0"), peer)
    try:
        inst.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
        settle(peer, [inst], quiet=1)
        for index, sender in enumerate(["jane@example.com", "ann@acme.example"] * 2):
            inst.send(make_mail(subject="Re: [Ticket #1] Printer broken", sender=sender,
                                body=f"Message number {index} from {sender}.\n"))
            settle(peer, [inst], quiet=1)
        assert peer.received() == {"ann@acme.example": 3, "jane@example.com": 3, "bob@example.com": 5}
    finally:
        inst.stop()


B_STAFF = """\
staff:
  - name: Kim Other
    emails: [kim@b.example]
    receive: all
"""


def test_two_connectors_cc_on_one_ticket_stop_within_the_budget(tmp_path, peer_factory):
    """Ann writes to A, Cc B; each files a ticket with the other as external recipient.
    Jane (A) and Kim (B) are away: Jane's out-of-office goes to Ann and B, B copies it to
    Kim, Kim's goes to Ann and A, A copies it to Jane, ..."""
    peer = peer_factory(("jane@example.com", "kim@b.example"))
    a = Instance(tmp_path / "a", peer.port, connector__add_recipients_from_headers="yes")
    b = Instance(tmp_path / "b", peer.port, connector__add_recipients_from_headers="yes",
                 connector__public_address="help@b.example", connector__notifications_address="notices@b.example")
    b.path.joinpath("config", "staff.yaml").write_text(B_STAFF)
    b.path.joinpath("config", "accounts.yaml").write_text("accounts: []\n")
    start(a, peer)
    start(b, peer, "help@b.example", "notices@b.example")
    try:
        first = make_mail(subject="Printer broken", sender="ann@acme.example", to="support@example.com",
                          cc="help@b.example")
        a.send(first, rcpts=["support@example.com"])
        b.send(first, rcpts=["help@b.example"])
        settle(peer, [a, b])
        counts = report("two connectors", peer)
        connector_copies = Counter(r for _, rcpts, _ in peer.messages for r in rcpts if r in peer.connectors)
        print(f"copies between the connectors: {dict(connector_copies)}")
        per_sender = Counter((sender, r) for sender, rcpts, _ in peer.messages for r in rcpts)
        # each connector: one copy caused by a person, then its loop budget per (address, ticket)
        assert all(n <= 1 + PER_TICKET for n in per_sender.values()), per_sender
        assert sum(counts.values()) + sum(connector_copies.values()) <= 2 * len(per_sender) * (1 + PER_TICKET)
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("auto_submitted", [False, True], ids=["unmarked", "auto-submitted"])
def test_notices_do_not_answer_an_autoresponder(tmp_path, peer_factory, auto_submitted):
    peer = peer_factory(("desk@example.com",), auto_submitted=auto_submitted)
    inst = start(Instance(tmp_path, peer.port, connector__triage_notice_to="desk@example.com"), peer)
    try:
        inst.send(make_mail(subject="[Ticket #99] Where is my order", sender="stranger@evil.example"))
        settle(peer, [inst])
        counts = report(f"notices ({'auto-submitted' if auto_submitted else 'unmarked'})", peer)
        assert counts == {"desk@example.com": 1}               # one notice; its answer gets none
        assert peer.answers == 1
        assert [(row[2], row[3]) for row in inst.spool_states()] == [
            ("triage", "unknown_ticket"),
            ("ignored_automatic", "auto_submitted") if auto_submitted else ("triage", "notifications_address")]
    finally:
        inst.stop()


def test_notices_are_limited_per_address(tmp_path, peer_factory):
    peer = peer_factory()
    inst = start(Instance(tmp_path, peer.port, connector__triage_notice_to="desk@example.com",
                          connector__notices_per_hour="3"), peer)
    try:
        for index in range(5):
            inst.send(make_mail(subject=f"[Ticket #{90 + index}] lost", sender=f"s{index}@evil.example"))
        settle(peer, [inst], quiet=2)
        assert peer.received() == {"desk@example.com": 3}
        assert len(inst.inbound()) == 5                        # the triage list keeps every item
    finally:
        inst.stop()


def test_our_marker_coming_back_is_never_redistributed(tmp_path, peer_factory):
    """A copy of ours forwarded back verbatim (a mailbox rule, another connector keeping our
    marker) is filed at most, never sent out again, whatever its From and subject say."""
    peer = peer_factory()
    inst = start(Instance(tmp_path, peer.port), peer)
    try:
        inst.send(make_mail(subject="Printer broken", sender="ann@acme.example"))
        settle(peer, [inst], quiet=1)
        copy = next(raw for _, rcpts, raw in peer.messages if "jane@example.com" in rcpts)
        out_before = len(peer.messages)
        parsed = email.message_from_bytes(copy, policy=policy.default)
        assert parsed["X-Connector-Loop"]
        # another connector replaced our X-Loop and our Message-ID, and kept our marker
        forwarded = copy.replace(b"Message-ID: ", b"X-Old-Message-ID: ", 1).replace(b"X-Loop: ", b"X-Old-Loop: ")
        forwarded = b"Message-ID: <fwd1@acme.example>\r\nFrom: ann@acme.example\r\n" + forwarded.replace(
            b"From: ", b"X-Old-From: ", 1)
        inst.send(forwarded, "ann@acme.example", ["support@example.com"])
        settle(peer, [inst], quiet=1)
        assert len(peer.messages) == out_before
        assert inst.spool_states()[-1][3].startswith("customer,automatic:loop")
    finally:
        inst.stop()


LOOP_AUTO_EMAILS_YAML = """\
auto_emails:
  - {name: ack, event: ticket_created, to: [requester], template: ticket_created.txt.j2}
  - {name: seen, event: customer_replied, to: [carl@example.com], template: ticket_forwarded.txt.j2}
  - {name: answered, event: employee_replied, to: [requester], template: ticket_forwarded.txt.j2}
"""


@contextlib.contextmanager
def looping(tmp_path, peer, auto_emails_yaml, name, sender="ann@acme.example", **ini):
    """A connector with these auto-emails gets one mail from `sender`: (the connector, what each
    address received, {(kind, address): rows sent}) once no mail moves."""
    inst = Instance(tmp_path, peer.port, **ini)
    inst.path.joinpath("config", "auto_emails.yaml").write_text(auto_emails_yaml)
    start(inst, peer)
    try:
        inst.send(make_mail(subject="Printer broken", sender=sender))
        settle(peer, [inst])
        counts = report(name, peer)
        sent = Counter((o["kind"], a) for o in inst.outbox() if o["status"] == "sent" for a in o["rcpt"])
        print(f"sent by kind: {dict(sent)}")
        yield inst, counts, sent
    finally:
        inst.stop()


def test_autoresponders_talking_to_auto_emails_stop_within_the_budget(tmp_path, peer_factory):
    """Ann's and Carl's out-of-office answer everything. Carl (receive: subscribed) hears of
    the ticket only by the auto-email of `customer_replied`; Ann by her auto-response, the
    copies of Carl's answers and the `employee_replied` auto-email: both paths are in the loop."""
    peer = peer_factory(("ann@acme.example", "carl@example.com"))
    with looping(tmp_path, peer, LOOP_AUTO_EMAILS_YAML, "autoresponders and auto-emails") as (inst, counts, sent):
        assert len(inst.tickets()) == 1
        # every mail ann and carl got is automatic (nobody wrote to them): at most the budget on the ticket
        assert 1 <= counts["carl@example.com"] <= PER_TICKET and 1 <= counts["ann@acme.example"] <= PER_TICKET
        assert sent[("auto_email", "carl@example.com")] >= 1                    # the auto-email path looped
        assert all(n <= 1 + PER_TICKET for n in counts.values()), counts         # staff: one copy of ann's mail
        assert inst.ticket(1)["message_count"] == len(inst.spool_states()) + 1  # every answer filed


@pytest.mark.parametrize("per_hour, expected", [("4", 4), ("0", 10)], ids=["auto-responses", "auto-responses-off"])
def test_a_robot_opening_ticket_after_ticket_gets_at_most_the_hourly_answers(tmp_path, peer_factory, per_hour,
                                                                              expected):
    """Each answer of the robot is a new ticket (new subject, no threading). It is confirmed by
    the auto-response, or when there is none by the `ticket_created` auto-email: at most
    auto_responses_per_hour answers in all (loop_mails_per_address_per_hour, 10, with
    auto-responses off)."""
    peer = peer_factory(("robot@acme.example",), fresh=True)
    with looping(tmp_path, peer, LOOP_AUTO_EMAILS_YAML, f"robot, auto_responses_per_hour = {per_hour}",
                 "robot@acme.example", connector__auto_responses_per_hour=per_hour) as (inst, counts, sent):
        assert counts["robot@acme.example"] == expected
        assert len(inst.tickets()) == expected + 1                # the unanswered answer is filed too
        kind = "auto_response" if per_hour != "0" else "auto_email"
        assert sent[(kind, "robot@acme.example")] == expected


BOUNCE_AUTO_EMAILS_YAML = """\
auto_emails:
  - {name: failed, event: delivery_failed, to: [requester, manager], template: ticket_forwarded.txt.j2}
"""


def test_a_bounce_of_our_auto_response_is_attributed_and_never_answered(tmp_path, peer_factory):
    """gone@acme.example does not exist: its MTA bounces our auto-response to the VERP address.
    The bounce is attributed to the auto-response, the ticket gets `delivery_failed`, its
    manager an auto-email and the employee recipients a notice; the dead address and the
    bounce's sender get nothing."""
    peer = peer_factory(bouncers=("gone@acme.example",))
    with looping(tmp_path, peer, BOUNCE_AUTO_EMAILS_YAML, "bounce of the auto-response",
                 "gone@acme.example") as (inst, counts, sent):
        assert peer.bounces == 1 and counts["gone@acme.example"] == 1
        assert not any(m[1] == ["MAILER-DAEMON@mx.acme.example"] for m in peer.messages)
        [bounced] = [o for o in inst.outbox() if o["status"] == "bounced"]
        assert bounced["kind"] == "auto_response" and bounced["rcpt"] == ["gone@acme.example"]
        history = [e["event"] for e in inst.json("tickets", "history", "1")]
        assert history.count("delivery_failed") == 1
        assert [b["target"] for b in inst.json("blocks", "list")] == ["gone@acme.example"]
        auto = [o for o in inst.outbox() if o["kind"] == "auto_email"]
        assert [(o["rcpt"], o["status"]) for o in auto] == [(["jane@example.com"], "sent")]
        notices = [o for o in inst.outbox() if o["kind"] == "notice"]
        assert [o["rcpt"] for o in notices] == [["jane@example.com", "bob@example.com"]]
        assert [row[2:] for row in inst.spool_states()] == [("new_ticket", "no_ticket_reference"),
                                                            ("ignored_automatic", "bounce_attributed")]
        assert sent[("auto_response", "gone@acme.example")] == 0        # it bounced


def test_the_confirmation_never_goes_where_the_auto_response_was_held(tmp_path, sink):
    """With `ticket_created -> requester` configured (the README's example), forged senders at
    one domain past the per-domain limit, and a sender asking for no automatic answer, got the
    auto-email instead of the held auto-response (an outside test: 10 auto-responses and 5
    auto-emails to 15 senders at a domain limited to 10). Held there, held here."""
    inst = Instance(tmp_path, sink.port, connector__auto_responses_per_domain_per_hour="2")
    inst.path.joinpath("config", "auto_emails.yaml").write_text(LOOP_AUTO_EMAILS_YAML)
    inst.start()
    try:
        for n in range(5):
            inst.send(make_mail(subject=f"Request {n}", sender=f"forged{n}@victim.example"))
        inst.send(make_mail(subject="No answer please", sender="quiet@acme.example",
                            headers={"X-Auto-Response-Suppress": "All"}))
        inst.wait_processed(6)
        answered = [o["kind"] for o in inst.outbox()
                    if o["kind"] in ("auto_response", "auto_email") and o["status"] != "suppressed"]
        assert answered == ["auto_response", "auto_response"], answered   # the domain's two, nothing else
        quiet = [o for o in inst.outbox() if "quiet@acme.example" in o["rcpt"]]
        assert all(o["status"] == "suppressed" for o in quiet), quiet
    finally:
        inst.stop()


def test_a_persons_quick_second_mail_on_their_own_first_is_no_loop(tmp_path, sink):
    """A customer's "forgot to say" right after the first mail threads on that mail, not on
    ours: its copies spend no loop budget, so the employee gets every one (an outside test
    lost 23 of 30 to `address_limit`)."""
    inst = Instance(tmp_path, sink.port).start()
    pairs = 12    # more than loop_mails_per_address_per_hour (10)
    try:
        for index in range(pairs):
            first = make_mail(subject=f"Pair {index}", sender=f"c{index}@customer{index}.example")
            second = make_mail(subject=f"Re: Pair {index}", sender=f"c{index}@customer{index}.example",
                               body="forgot to say\n")
            second["In-Reply-To"] = second["References"] = first["Message-ID"]
            inst.send(first)
            inst.send(second)
        inst.wait_processed(2 * pairs, timeout=60)
        inst.wait_delivered(timeout=60)
        follow_ups = [m for m in sink.to("bob@example.com") if b"forgot to say" in m[2]]
        assert len(follow_ups) == pairs
        assert len(inst.tickets()) == pairs
    finally:
        inst.stop()


def test_an_employees_answer_right_after_take_reaches_the_customer(tmp_path, sink):
    """Bob answers the copy he got with `#take`, then at once with his answer. The
    auto-response and the `ticket_taken` auto-email to Ann spent her per-ticket loop budget,
    and the receipt of `#take` made Bob's answer a "quick reply": Ann never got it (an outside
    test). An auto-email about a person's action and a receipt are no loop: she gets it."""
    inst = Instance(tmp_path, sink.port)
    (tmp_path / "config" / "inboxes.yaml").write_text(
        "inboxes:\n  - name: Technical\n    members: [bob@example.com]\ndefault_inbox: Technical\n")
    (tmp_path / "config" / "auto_emails.yaml").write_text(
        "default_sender: {address: helpdesk@example.com, name: Helpdesk}\nauto_emails:\n"
        "  - {name: taken, event: ticket_taken, to: [requester], template: ticket_forwarded.txt.j2}\n")
    inst.start()
    try:
        inst.send(make_mail(subject="Server down", sender="ann@acme.example"))
        inst.wait_processed(1)
        inst.wait_delivered()
        [copy] = [email.message_from_bytes(raw, policy=policy.default) for _, _, raw in sink.to("bob@example.com")]
        number = inst.tickets()[0]["number"]
        for body in ("#take\n", "Dear Ann, please restart the server.\n"):
            answer = make_mail(subject=f"Re: [Ticket #{number}] Server down", sender="bob@example.com", body=body)
            answer["In-Reply-To"] = answer["References"] = copy["Message-ID"]
            inst.send(answer)
            inst.wait_processed(len(inst.spool_states()))
            inst.wait_delivered()
        to_ann = [raw for _, _, raw in sink.to("ann@acme.example")]
        assert len(to_ann) == 3                                    # auto-response, taken, Bob's answer
        assert any(b"please restart the server" in raw for raw in to_ann)
    finally:
        inst.stop()
