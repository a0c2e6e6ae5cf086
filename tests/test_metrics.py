"""Prometheus metrics and /healthz, scraped from the real daemon after real SMTP mail."""

import json
import os
import signal
import smtplib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Instance, make_mail, wait_for
from health import add_metrics, children_running, get

from connector.store import migrations
from connector.store.db import open_store


def scrape(url):
    code, body = get(url + "/metrics")
    assert code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


@pytest.fixture
def metered(tmp_path, sink):
    inst = Instance(tmp_path, sink.port)
    url = add_metrics(inst)
    inst.start()
    wait_for(lambda: children_running(inst), 20, interval=0.3, what="children running")
    yield inst, url
    inst.stop()


def test_counters_after_real_mail(metered, sink):
    inst, url = metered
    inst.send(make_mail(subject="Printer broken"))                            # a new ticket
    inst.send(make_mail(subject="Newsletter", to="notifications@example.com"))  # triage
    with smtplib.SMTP("127.0.0.1", inst.port) as smtp:                     # refused at RCPT, twice
        smtp.ehlo()
        smtp.mail("ann@acme.example")
        assert smtp.rcpt("someone@elsewhere.example")[0] == 550
        assert smtp.rcpt("other@elsewhere.example")[0] == 550
    inst.cli("inject", "--sender", "bob@beta.example", "--recipient", "support@example.com",
             input=bytes(make_mail(subject="By pipe", sender="bob@beta.example")))
    inst.wait_processed(3)
    inst.wait_delivered()
    sent = [o for o in inst.outbox() if o["status"] == "sent"]
    assert sent
    m = scrape(url)
    assert m[("connector_intake_accepted_total", (("intake", "smtp"),))] == 2
    assert m[("connector_intake_accepted_total", (("intake", "pipe"),))] == 1      # another process's intake
    assert m[("connector_intake_refused_total", (("reason", "not_our_address"),))] == 2
    assert m[("connector_messages_processed_total", (("action", "new_ticket"),))] == 2
    assert m[("connector_messages_processed_total", (("action", "triage"),))] == 1
    assert m[("connector_triage_items_total", (("reason", "notifications_address"),))] == 1
    assert m[("connector_filing_latency_seconds_count", ())] == 3
    assert m[("connector_filing_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert m[("connector_delivery_attempts_total", (("outcome", "sent"),))] == len(sent)
    assert m[("connector_outbox_messages", (("status", "pending"),))] == 0
    assert m[("connector_outbox_messages", (("status", "failed"),))] == 0
    assert m[("connector_spool_backlog_messages", ())] == 0
    assert m[("connector_child_restarts_total", (("child", "worker"),))] == 0
    assert m[("connector_child_up", (("child", "deliver"),))] == 1
    assert m[("connector_health_status", ())] == 0
    assert m[("connector_config_generation", ())] == 1
    again = scrape(url)   # a scrape adds only what is new
    assert again[("connector_intake_accepted_total", (("intake", "smtp"),))] == 2
    assert again[("connector_filing_latency_seconds_count", ())] == 3


def test_backlog_gauges_and_child_restarts(metered):
    inst, url = metered
    state = json.loads(inst.cli("status", "--json", check=False).stdout)
    worker = state["children"]["worker"]["pid"]
    os.kill(worker, signal.SIGSTOP)            # the worker hangs: mail is accepted, not filed
    try:
        for number in range(2):
            inst.send(make_mail(subject=f"Waiting {number}"))
        m = scrape(url)
        assert m[("connector_spool_backlog_messages", ())] == 2
        assert m[("connector_spool_backlog_oldest_age_seconds", ())] > 0
        os.kill(worker, signal.SIGKILL)
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_for(lambda: scrape(url)[("connector_child_restarts_total", (("child", "worker"),))] == 1, 20,
             what="worker restarted")
    inst.wait_processed(2)
    assert scrape(url)[("connector_spool_backlog_messages", ())] == 0


def test_healthz(metered):
    inst, url = metered
    code, body = get(url + "/healthz")
    assert code == 200 and json.loads(body)["state"] == "healthy"
    assert get(url + "/nothing")[0] == 404


@pytest.mark.sqlite_only("an older store made by editing SQLite files")
def test_an_old_store_gains_the_processed_at_index(tmp_path):
    path = tmp_path / "c.db"
    db = open_store(path)
    db.execute_sql('DROP INDEX "processing_processed_at"')
    db.execute_sql('DELETE FROM "schema_migration" WHERE "name" = ?', ("0003_processing_processed_at_index",))
    db.close()
    db = open_store(path)
    assert migrations.status(db)["pending"] == []
    names = {row[0] for row in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()}
    assert "processing_processed_at" in names
