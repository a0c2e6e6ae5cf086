"""The outbox: a relay that is down delays mail and never loses it; a processing
error keeps the message, shows it in triage and can be replayed."""

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
    rows = wait_for(lambda: [o for o in instance.outbox() if o["attempts"] >= 2], 15, what="retries")
    assert all(o["status"] == "pending" for o in instance.outbox())
    assert rows
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
            return "550 5.1.1 no such user"


def test_permanent_refusal_marks_failed_without_retrying(no_relay_instance):
    instance = no_relay_instance
    relay = RefusingSink(port=instance_relay_port(instance))
    relay.start()
    try:
        instance.start()
        instance.send(make_mail(subject="Refused everywhere"))
        instance.wait_processed(1)
        rows = wait_for(lambda: [o for o in instance.outbox() if o["status"] == "failed"] == instance.outbox()
                        and instance.outbox(), 15, what="failed rows")
        assert all(o["attempts"] == 1 for o in rows)
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
    reloads = worker_reloads(daemon)
    template.write_text("Subject: {{ ticket.tag }}\n\n{{ reply_above }}\nThanks.\n")
    wait_for(lambda: worker_reloads(daemon) > reloads, what="the worker to load the fixed template")
    daemon.cli("inbound", "replay", str(items[0]["id"]))
    daemon.wait_processed(1)
    assert [t["subject"] for t in daemon.tickets()] == ["Breaks the template"]
    assert daemon.inbound()[0]["status"] == "closed"
