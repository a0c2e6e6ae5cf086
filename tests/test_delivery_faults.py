"""Delivery under faults, with real processes: `connector deliver` against a relay
process (tests/fault_relay.py) that refuses, drops connections and is killed.

Mail accepted by the relay is never sent again, except the one mail in
flight when a process dies (its 250 never arrived, or was never recorded).
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import free_port, wait_for
from connector.store.outbox import queue_many
from connector.store.models import database
from relays import store_and_settings

RELAY = Path(__file__).with_name("fault_relay.py")
ACTIVE = ("pending", "deferred")


def start_relay(port, log, *options):
    proc = subprocess.Popen([sys.executable, str(RELAY), str(port), str(log), *options], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def start_deliver(ini):
    return subprocess.Popen([sys.executable, "-m", "connector", "-c", str(ini), "deliver"],
                            stdout=open(ini.parent / "deliver.log", "ab"), stderr=subprocess.STDOUT,
                            cwd=ini.parent, start_new_session=True)


def kill(proc):
    os.killpg(proc.pid, signal.SIGKILL) if proc.args[-1] == "deliver" else proc.kill()
    proc.wait()


def fill_outbox(count):
    """`count` mails, mail i to r<2i> and r<2i+1>; returns the recipients of each mail."""
    now = time.time()
    mails = [[f"r{2 * i}@acme.example", f"r{2 * i + 1}@acme.example"] for i in range(count)]
    rows = [{"ticket": None, "kind": "notice", "mail_from": "support@example.com", "rcpt": rcpt, "to": rcpt,
             "cc": [], "bcc": [], "subject": f"mail {i}", "message_id": f"<{i}@example.com>",
             "raw": f"Subject: mail {i}\r\nMessage-ID: <{i}@example.com>\r\n\r\nHello.\r\n".encode(),
             "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
            for i, rcpt in enumerate(mails)]
    with database.atomic():
        queue_many(rows)
    return mails


def outbox(db):
    with sqlite3.connect(db) as conn:
        return conn.execute('SELECT "id", "status", "recipients" FROM "outbox" ORDER BY "id"').fetchall()


def delivered(log):
    """How many copies each recipient got; the relay's `#drop` lines count as '#drop'."""
    counts = Counter(log.read_text().split()) if log.exists() else Counter()
    counts.pop("#drop", None)
    return counts


def drops(log):
    return log.read_text().split().count("#drop")


def test_thousand_mails_through_refusals_drops_and_two_relay_kills(tmp_path):
    port, log = free_port(), tmp_path / "relay.log"
    settings = store_and_settings(tmp_path, port, retry_initial="0.05", retry_max="0.2", log_level="info")
    mails = fill_outbox(1000)
    started = time.monotonic()
    relay = start_relay(port, log, "--refuse-every", "10", "--drop-every", "50")
    deliver = start_deliver(settings.ini_path)
    kills = 0
    try:
        for threshold in (500, 1100):  # of the 1,800 accepted recipients
            wait_for(lambda: sum(delivered(log).values()) >= threshold, 60, what=f"{threshold} delivered")
            kill(relay)
            kills += 1
            time.sleep(0.3)
            relay = start_relay(port, log, "--refuse-every", "10", "--drop-every", "50")
        wait_for(lambda: not [r for r in outbox(settings.database) if r[1] in ACTIVE], 60, what="outbox done")
    finally:
        deliver.terminate()
        deliver.wait(20)
        relay.terminate()
        relay.wait(20)
    elapsed = time.monotonic() - started

    counts = delivered(log)
    accepted = {a for rcpt in mails for a in rcpt if int(a[1:].split("@")[0]) % 10}
    refused = {a for rcpt in mails for a in rcpt} - accepted
    twice = [i for i, rcpt in enumerate(mails) if any(counts[a] > 1 for a in rcpt)]
    print(f"\ndelivery fault test: {len(mails)} mails, {len(accepted)} accepted recipients, "
          f"{len(refused)} refused; delivered {sum(counts.values())} copies to {len(counts)} recipients; "
          f"missing {len(accepted - set(counts))}; mails sent twice {len(twice)}; relay kills {kills}; "
          f"connections dropped {drops(log)}; "
          f"{elapsed:.1f} s")
    assert accepted <= set(counts)                        # every mail to every accepted recipient
    assert not refused & set(counts)
    assert max(counts.values()) <= 2 and len(twice) <= kills   # only the one in flight at a kill
    assert drops(log) >= 15
    rows = outbox(settings.database)
    assert {status for _, status, _ in rows} == {"sent"}
    assert all('"refused"' in states for _, _, states in rows[::5])    # r<10k> is in every fifth mail
    assert "550 5.1.1 <r0@acme.example>: Recipient address rejected" in rows[0][2]


def test_killed_delivery_resends_only_the_mail_in_flight(tmp_path):
    port, log = free_port(), tmp_path / "relay.log"
    settings = store_and_settings(tmp_path, port, retry_initial="0.05", retry_max="0.2", log_level="info")
    mails = fill_outbox(10)
    relay = start_relay(port, log, "--hold-at", "5")     # keeps the 5th mail, never answers 250
    deliver = start_deliver(settings.ini_path)
    try:
        wait_for(lambda: sum(delivered(log).values()) == 10, 30, what="five mails kept")
        kill(deliver)
        statuses = [status for _, status, _ in outbox(settings.database)]
        assert statuses == ["sent"] * 4 + ["pending"] * 6   # each outcome committed as the relay answered
        kill(relay)
        relay = start_relay(port, log)
        deliver = start_deliver(settings.ini_path)
        wait_for(lambda: not [r for r in outbox(settings.database) if r[1] in ACTIVE], 30, what="outbox done")
    finally:
        deliver.terminate()
        deliver.wait(20)
        relay.terminate()
        relay.wait(20)
    counts = delivered(log)
    assert [max(counts[a] for a in rcpt) for rcpt in mails] == [1, 1, 1, 1, 2, 1, 1, 1, 1, 1]
