"""A relay that refuses a recipient at RCPT (a smarthost that checks addresses:
Microsoft 365, most providers) is a bounce like any other: the delivery process
reports it into our own spool (`connector.outbound.refusals`), and the worker
blocks the address, writes `delivery_failed` and tells the ticket's employees,
through the real daemon against a real scripted relay. A refusal about us or
our relay (relaying denied) blocks nobody and leaves the row failed."""

from conftest import Instance, make_mail, wait_for
from relays import ScriptedRelay

GONE = "gone@acme.example"
UNKNOWN = "550 5.1.1 <gone@acme.example>: Recipient address rejected: User unknown in virtual mailbox table"


def _site(tmp_path, replies):
    relay = ScriptedRelay(replies=replies).start()
    instance = Instance(tmp_path, relay.port)
    return relay, instance.start()


def test_a_user_unknown_at_rcpt_blocks_the_address_and_tells_the_employees(tmp_path):
    relay, daemon = _site(tmp_path, {GONE: [UNKNOWN] * 5})
    try:   # no auto-response: the employee's reply is the first mail to the customer
        daemon.send(make_mail(subject="Printer broken", sender=GONE, headers={"X-Auto-Response-Suppress": "All"}))
        daemon.wait_processed(1)
        daemon.wait_delivered()
        # an employee answers: the relay refuses the customer at RCPT
        daemon.send(make_mail(subject="[Ticket #1] Printer broken", sender="jane@example.com", body="Try this."))
        wait_for(lambda: any(o["kind"] == "distribution" and o["status"] == "bounced" for o in daemon.outbox()),
                 20, interval=0.3, what="the refused reply marked bounced")
        block = daemon.json("blocks", "list")[0]
        assert (block["target"], block["reason"], block["kind"]) == (GONE, "userunknown", "address")
        assert "outbox row" in block["source"]
        history = daemon.json("tickets", "history", "1")
        assert [e["event"] for e in history].count("delivery_failed") == 1
        daemon.wait_delivered()
        notices = [m for m in relay.messages if "jane@example.com" in m[1] and b"Not delivered to" in m[2]]
        assert len(notices) == 1 and GONE.encode() in notices[0][2]
        assert b"the address does not exist (userunknown, 5.1.1)" in notices[0][2]   # words for staff
        # the next automatic mail to the dead address is not tried again
        daemon.send(make_mail(subject="Another question", sender=GONE))
        daemon.wait_processed(4)
        assert [o["kind"] for o in daemon.outbox() if o["status"] == "suppressed"] == ["auto_response"]
        why = daemon.json("why", GONE)
        assert why["block"]["reason"] == "userunknown"
        status = daemon.cli("status", check=False)
        assert status.returncode == 0, status.stdout   # a customer's dead address does not page the on-call
    finally:
        daemon.stop()
        relay.stop()


def test_relaying_denied_by_our_relay_blocks_nobody_and_the_row_stays_failed(tmp_path):
    denied = "554 5.7.1 <gone@acme.example>: Relay access denied"
    relay, daemon = _site(tmp_path, {GONE: [denied] * 5})
    try:
        daemon.send(make_mail(subject="Printer broken", sender=GONE))
        daemon.wait_processed(1)
        def auto_response():
            return [o["status"] for o in daemon.outbox() if o["kind"] == "auto_response"]
        wait_for(lambda: auto_response() == ["failed"], 20, what="the refused auto-response")
        daemon.wait_delivered()
        assert daemon.spool_states()[-1][0] == 1   # nothing reported into the spool
        assert daemon.json("blocks", "list") == [] and auto_response() == ["failed"]
        assert daemon.cli("status", check=False).returncode != 0   # our relay's configuration: an operator looks
    finally:
        daemon.stop()
        relay.stop()
