"""The outbox: a relay that is down delays mail and never loses it; a processing
error keeps the message, shows it in triage and can be replayed."""

import json
import time
from email import message_from_bytes, policy

import pytest

from conftest import Instance, Sink, free_port, make_mail, wait_for


@pytest.fixture
def no_relay_instance(tmp_path):
    """An installation whose relay port nothing listens on (yet)."""
    inst = Instance(tmp_path, free_port())
    yield inst
    inst.stop()


def test_relay_down_then_up(no_relay_instance):
    instance = no_relay_instance
    relay = Sink(port=instance_relay_port(instance))      # nothing listens yet: the relay is down
    instance.start()
    instance.send(make_mail(subject="While the relay sleeps"))
    instance.wait_processed(1)
    rows = wait_for(lambda: [o for o in instance.outbox() if o["attempts"] >= 2], 15, interval=0.3, what="retries")
    assert rows and all(o["status"] == "deferred" for o in rows)
    assert {o["status"] for o in instance.outbox()} <= {"pending", "deferred"}  # waiting, none lost
    relay.start()
    try:
        instance.wait_delivered(timeout=20)
        statuses = {o["status"] for o in instance.outbox()}
        assert statuses == {"sent"}
        assert len(relay.messages) == len(instance.outbox()) == 2
        answer = message_from_bytes(relay.to("ann@acme.example")[0][2], policy=policy.default)
        assert answer["Message-ID"] and answer["In-Reply-To"] and answer["References"]
        assert "outbox.deferred" in instance.log.read_text()
    finally:
        relay.stop()


def instance_relay_port(instance):
    text = instance.ini.read_text()
    return int(text.split("relay = 127.0.0.1:")[1].split()[0])


class RefusingSink(Sink):
    class Handler(Sink.Handler):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return "554 5.7.1 relay access denied"   # about our relay: stays failed (a user unknown bounces)


def test_permanent_refusal_marks_failed_without_retrying(no_relay_instance):
    instance = no_relay_instance
    relay = RefusingSink(port=instance_relay_port(instance))
    relay.start()
    try:
        instance.start()
        instance.send(make_mail(subject="Refused everywhere"))
        instance.wait_processed(1)
        rows = wait_for(lambda: [o for o in instance.outbox() if o["status"] == "failed"] == instance.outbox()
                        and instance.outbox(), 15, interval=0.3, what="failed rows")
        assert all(o["attempts"] == 1 for o in rows)
        assert all(o["last_error"].endswith(": 554 5.7.1 relay access denied") for o in rows)
        log = instance.log.read_text()
        assert "554 5.7.1 relay access denied" in log and "b'" not in log   # text, never a bytes repr
    finally:
        relay.stop()


def worker_reloads(daemon):
    return sum(1 for line in daemon.log.read_text().splitlines()
               if '"config.reloaded"' in line and '"process": "worker"' in line)


def test_processing_error_is_kept_and_replayable(daemon, sink):
    template = daemon.path / "templates" / "auto_response.txt.j2"
    template.parent.mkdir()
    # Passes the check (its sample sender has a name), raises for a sender without one: a
    # template that fails the check is never used. Templates are read when (re)loaded.
    wait_for(lambda: '"worker.started"' in daemon.log.read_text(), what="worker running")
    reloads = worker_reloads(daemon)
    template.write_text("Subject: {{ ticket.tag }}\n\n{{ 10 // sender.name | length }}\n")
    wait_for(lambda: worker_reloads(daemon) > reloads, what="the worker to load the template")
    raw = make_mail(subject="Breaks the template").as_bytes()
    daemon.send(raw, "ann@acme.example", ["support@example.com"])
    wait_for(lambda: daemon.spool_states() and daemon.spool_states()[0][1] == "shunted", what="shunt")
    items = daemon.inbound()
    assert [(i["status"], i["reason"]) for i in items] == [("needs_attention", "processing_error")]
    assert (items[0]["subject"], items[0]["from"]) == ("Breaks the template", "ann@acme.example")
    assert daemon.tickets() == []                           # nothing half-written
    exported = daemon.cli("message", "export", "--spool", "1").stdout
    assert exported.rstrip() == raw.rstrip()                # the message is kept whole
    daemon.cli("inbound", "replay", str(items[0]["id"]))     # fails again: the same item, not a second
    wait_for(lambda: daemon.rows("SELECT state, attempts FROM processing") == [("shunted", 2)], what="2nd shunt")
    assert [i["id"] for i in daemon.inbound()] == [items[0]["id"]]
    reloads = worker_reloads(daemon)
    template.write_text("Subject: {{ ticket.tag }}\n\n{{ reply_above }}\nThanks.\n")
    wait_for(lambda: worker_reloads(daemon) > reloads, what="the worker to load the fixed template")
    daemon.cli("inbound", "replay", str(items[0]["id"]))
    daemon.wait_processed(1)
    assert [t["subject"] for t in daemon.tickets()] == ["Breaks the template"]
    assert daemon.inbound()[0]["status"] == "closed"


# -- the odd address of issue 8, end to end --------------------------------------------------

def test_unicode_customer_does_not_stop_outgoing_mail(tmp_path):
    """jöran@acme.example writes (the intake takes SMTPUTF8); the relay does not offer it."""
    import smtplib
    from relays import ScriptedRelay
    relay = ScriptedRelay().start()
    instance = Instance(tmp_path, relay.port)
    try:
        instance.start()
        with smtplib.SMTP("127.0.0.1", instance.port, timeout=10) as smtp:
            smtp.sendmail("jöran@acme.example", ["support@example.com"],
                          make_mail(subject="Umlaut", sender="jöran@acme.example").as_bytes(policy=policy.SMTPUTF8),
                          mail_options=["SMTPUTF8"])
        instance.send(make_mail(subject="Plain"))
        instance.wait_processed(2)
        instance.wait_delivered()
        rows = instance.outbox()
        odd = [o for o in rows if "jöran@acme.example" in o["rcpt"]]
        assert odd and all(o["status"] == "failed" and "SMTPUTF8 is required" in o["last_error"] for o in odd)
        assert {o["status"] for o in rows if o not in odd} == {"sent"}
        assert relay.to("ann@acme.example")                 # later mail still goes out
        assert not [m for m in relay.messages if "jöran@acme.example" in m[1]]
    finally:
        instance.stop()
        relay.stop()


# -- outbox list --status, retry, cancel --------------------------------------------------

def outbox_cli(ini, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "connector", "-c", str(ini), "outbox", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def outbox_rows(tmp_path):
    """Rows in each state, delivered through a real relay: sent (one recipient refused), failed, deferred."""
    from connector.outbound.delivery import Delivery
    from relays import Clock, ScriptedRelay, queue, store_and_settings
    relay = ScriptedRelay(replies={"gone@acme.example": ["550 5.1.1 <gone@acme.example>: User unknown"] * 9,
                                   "busy@acme.example": ["450 4.2.1 busy"] * 9}).start()
    clock = Clock(now=time.time())
    settings = store_and_settings(tmp_path, relay.port)
    delivery = Delivery(settings, clock=clock)
    ids = {"sent": queue(["ann@acme.example", "gone@acme.example"], clock.now)[0],
           "failed": queue(["gone@acme.example"], clock.now)[0],
           "deferred": queue(["busy@acme.example"], clock.now)[0]}
    delivery.run_once()
    ids["pending"] = queue(["bea@acme.example"], clock.now + 3600)[0]
    yield settings.ini_path, ids, relay, delivery, clock
    delivery.close()
    relay.stop()


def test_list_accepts_every_status(outbox_rows):
    ini, ids, *_ = outbox_rows
    for status in ("pending", "deferred", "sent", "failed"):
        listed = json.loads(outbox_cli(ini, "list", "--status", status, "--json").stdout)
        assert [o["id"] for o in listed] == [ids[status]]
    listed = json.loads(outbox_cli(ini, "list", "--status", "cancelled", "--json").stdout)
    assert listed == []
    sent = json.loads(outbox_cli(ini, "list", "--status", "sent", "--json").stdout)[0]
    assert sent["recipients"] == [
        {"address": "ann@acme.example", "state": "accepted", "reply": "250 OK"},
        {"address": "gone@acme.example", "state": "refused", "reply": "550 5.1.1 <gone@acme.example>: User unknown"}]
    table = outbox_cli(ini, "list").stdout
    assert "550 5.1.1" in table and "b'" not in table


def test_retry_sends_to_the_refused_recipient_only(outbox_rows):
    ini, ids, relay, delivery, clock = outbox_rows
    relay.replies.clear()                                   # the operator fixed the mailbox
    result = outbox_cli(ini, "retry", str(ids["sent"]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "pending"
    clock.now = time.time() + 1                             # the retry made it due now
    delivery.run_once()
    counts = relay.rcpt_counts()
    assert (counts["ann@acme.example"], counts["gone@acme.example"]) == (1, 1)
    again = outbox_cli(ini, "retry", str(ids["sent"]))
    assert (again.returncode, again.stderr) == (1, f"connector: outbox row {ids['sent']} was delivered to every "
                                                   "recipient: nothing to retry\n")


def test_retry_a_failed_row_restarts_it(outbox_rows):
    ini, ids, relay, delivery, clock = outbox_rows
    relay.replies.clear()
    assert outbox_cli(ini, "retry", str(ids["failed"])).returncode == 0
    clock.now = time.time() + 1
    delivery.run_once()
    listed = json.loads(outbox_cli(ini, "list", "--status", "sent", "--json").stdout)
    assert ids["failed"] in [o["id"] for o in listed]


def test_cancel_stops_delivery(outbox_rows):
    ini, ids, relay, delivery, clock = outbox_rows
    result = outbox_cli(ini, "cancel", str(ids["deferred"]), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "cancelled"
    relay.replies.clear()
    clock.now += 3600
    delivery.run_once()
    assert "busy@acme.example" not in relay.rcpt_counts()
    assert [o["id"] for o in json.loads(outbox_cli(ini, "list", "--status", "cancelled", "--json").stdout)] \
        == [ids["deferred"]]
    again = outbox_cli(ini, "cancel", str(ids["deferred"]))
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "is cancelled" in again.stderr
    retried = outbox_cli(ini, "retry", str(ids["deferred"]))
    assert retried.returncode == 1 and "is cancelled: nothing to retry" in retried.stderr


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_unknown_row(outbox_rows, action):
    ini, *_ = outbox_rows
    result = outbox_cli(ini, action, "999")
    assert (result.returncode, result.stderr) == (1, "connector: no outbox row 999\n")


def test_cancel_sent_row_is_refused(outbox_rows):
    ini, ids, *_ = outbox_rows
    result = outbox_cli(ini, "cancel", str(ids["sent"]))
    assert result.returncode == 1 and "is sent: only pending, deferred, failed rows can be cancelled" in result.stderr
