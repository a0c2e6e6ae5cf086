"""PostgreSQL taken away under load (issue 13): while it is down the SMTP intake answers
4xx (never 250 for what is not stored), the worker logs `storage.fault` and keeps the
queue; once it is back everything that got a 250 is filed, and `storage.recovered` is
logged. A server of its own (tests/pg.py), so the session's is never stopped."""

import smtplib
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import pg
from conftest import Instance, make_mail, wait_for


@pytest.fixture
def own_server():
    reason = pg.available()
    if reason:
        pytest.skip(reason)
    server = pg.PostgresServer().start()
    yield server
    server.destroy()


class Load:
    """Senders in a thread, one SMTP session per mail: who got 250, who a 4xx."""

    def __init__(self, port):
        self.port = port
        self.accepted, self.deferred, self.other = [], [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            msg = make_mail(subject=f"Load {n}", sender=f"c{n}@acme.example", message_id=f"<load-{n}@acme.example>")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                    smtp.send_message(msg)
                self.accepted.append(msg["Message-ID"])
            except smtplib.SMTPResponseException as exc:
                (self.deferred if 400 <= exc.smtp_code < 500 else self.other).append((msg["Message-ID"], exc.smtp_code))
            except (smtplib.SMTPException, OSError) as exc:
                self.other.append((msg["Message-ID"], repr(exc)))
            time.sleep(0.02)


def test_postgresql_stopped_during_a_load_defers_and_loses_nothing_acknowledged(tmp_path, sink, own_server):
    url = own_server.new_database()
    inst = Instance(tmp_path, sink.port, connector__database=url, connector__data_dir="var").start()
    wait_for(lambda: all(e in inst.log.read_text() for e in ("worker.started", "deliver.started")), 30,
             what="the worker and delivery to run (a child that cannot open the store at start is restarted)")
    load = Load(inst.port)
    try:
        load.thread.start()
        wait_for(lambda: len(load.accepted) >= 10, 30, what="mail accepted before the outage")
        own_server.stop()
        wait_for(lambda: len(load.deferred) >= 3, 30, what="4xx while PostgreSQL is down")
        accepted_while_down = len(load.accepted)
        time.sleep(2.5)  # the worker looks at the store at least every second: it meets the outage
        assert len(load.accepted) == accepted_while_down  # no 250 while nothing can be stored
        own_server.start()
        wait_for(lambda: len(load.accepted) >= accepted_while_down + 10, 60, what="mail accepted again")
    finally:
        load.stop.set()
        load.thread.join(60)
    try:
        assert load.other == []  # 250 or a temporary failure, never a permanent one or a dropped session
        with psycopg.connect(url) as conn:
            def filed():
                rows = conn.execute("SELECT count(*) FROM processing WHERE state = 'done'").fetchone()[0]
                return rows >= len(load.accepted)
            wait_for(filed, 60, what="every acknowledged mail filed")
            stored = {row[0] for row in conn.execute("SELECT message_id FROM processing WHERE state = 'done'")}
        assert set(load.accepted) <= stored  # nothing acknowledged is lost
        # (a 4xx may still have been stored: a commit whose answer the outage swallowed; the
        # sender's retry is then a duplicate, filed once by its Message-ID)
        log = inst.log.read_text()
        assert '"storage.fault"' in log and '"storage.recovered"' in log, log[-3000:]
    finally:
        inst.stop()


def test_the_daemon_started_while_postgresql_is_down_waits_for_it(tmp_path, sink, own_server):
    """At boot PostgreSQL may come up after the connector: check-config warns (the
    configuration is right), `run` waits with backoff instead of failing the start (systemd
    would give up after five), then serves as usual."""
    url = own_server.new_database()
    inst = Instance(tmp_path, sink.port, connector__database=url, connector__data_dir="var")
    own_server.stop()
    check = inst.cli("check-config", check=False)
    assert check.returncode == 0, check.stderr
    assert "will wait for it" in check.stderr.decode() and "Traceback" not in check.stderr.decode()
    try:
        inst.proc = subprocess.Popen([sys.executable, "-m", "connector", "-c", str(inst.ini), "run"],  # not .start():
                                     stdout=open(inst.log, "ab"), stderr=subprocess.STDOUT, cwd=inst.path,  # it
                                     start_new_session=True)                                  # waits to listen
        wait_for(lambda: '"storage.fault"' in inst.log.read_text(), 20, what="the daemon to wait")
        time.sleep(2)
        assert inst.proc.poll() is None                          # still waiting, not failed
        own_server.start()
        wait_for(lambda: '"storage.recovered"' in inst.log.read_text(), 40, what="the daemon to see it back")
        wait_for(lambda: '"daemon.ready"' in inst.log.read_text(), 30, what="the daemon to start")
        inst.send(make_mail(subject="After the boot"))
        inst.wait_processed(1, timeout=30)
        assert [t["subject"] for t in inst.tickets()] == ["After the boot"]
    finally:
        inst.stop()


def test_an_idle_daemon_logs_the_recovery_of_an_outage_too(tmp_path, sink, own_server):
    """With nothing queued the worker's looks at the spool fail while PostgreSQL is away; once
    they work again the worker says so (outside test: 13 storage.fault, no storage.recovered)."""
    inst = Instance(tmp_path, sink.port, connector__database=own_server.new_database(),
                    connector__data_dir="var").start()
    try:
        wait_for(lambda: '"worker.started"' in inst.log.read_text(), 30, what="the worker to run")
        own_server.stop()
        wait_for(lambda: '"storage.fault"' in inst.log.read_text() and '"process": "worker"' in inst.log.read_text(),
                 30, what="the idle worker to see the outage")
        own_server.start()

        def recovered(process):
            return any('"storage.recovered"' in line and f'"process": "{process}"' in line
                       for line in inst.log.read_text().splitlines())
        wait_for(lambda: recovered("worker"), 60, what="the worker to log the recovery")
    finally:
        inst.stop()
