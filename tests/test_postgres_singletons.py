"""Singletons on several nodes (issue 13): two real daemons (`connector run`), each its own
`[node] name`, data_dir and SMTP port, on one real PostgreSQL, with one IMAP scanner of a
real Dovecot mailbox configured on both. Only the node holding `scanner:support` scans;
kill -9 of its process group, SIGSTOP (a frozen node) and SIGTERM hand the scanner to the
other node, and every mail of the mailbox is filed exactly once. The deadline timer and
pruning run on one node. `connector nodes --json` says who holds what."""

import json
import os
import secrets
from datetime import datetime
import signal
import time

import pytest
import yaml

from conftest import Instance, make_mail, wait_for
from dovecot import PASSWORD, dovecot_fixture, scanner

dovecot = pytest.fixture(scope="module")(dovecot_fixture)

FAILOVER = 3  # [node] failover_seconds in these tests (the default is 30)
SLACK = 20    # seconds a loaded machine may add to a takeover before a wait gives up
LEASE = "scanner:support"
KEY = secrets.token_bytes(32)  # the nodes' hmac.key, copied to each as the README says

INBOXES_YAML = """\
inboxes:
  - name: Technical
    members: [bob@example.com]
default_inbox: Technical
"""

AUTO_EMAILS_YAML = """\
default_sender: {address: helpdesk@example.com, name: Helpdesk}
auto_emails:
  - name: overdue
    event: deadline_passed
    to: [resource]
    template: deadline_passed.txt.j2
"""


def node(tmp_path, sink, pg_url, name, scanners=(), failover=FAILOVER, **ini):
    """A connector node in its own folder on the shared database."""
    inst = Instance(tmp_path / name, sink.port, connector__database=pg_url, connector__data_dir="var",
                    node__name=name, node__failover_seconds=str(failover), **ini)
    (inst.path / "secrets").mkdir()
    (inst.path / "secrets" / "imap.pass").write_text(PASSWORD + "\n")
    (inst.path / "var").mkdir(mode=0o700)                     # every node the store's one key
    (inst.path / "var" / "hmac.key").write_bytes(KEY)
    (inst.path / "var" / "hmac.key").chmod(0o600)
    (inst.path / "config" / "scanners.yaml").write_text(yaml.safe_dump({"scanners": list(scanners)}))
    return inst


def events(inst, name, since=0):
    """The log lines of event `name` of `inst` (from byte `since` of its log)."""
    text = inst.log.read_bytes()[since:].decode(errors="replace")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


def at(event):
    """The time of a log line, in epoch seconds."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def holders(inst):
    """{lease name: node} of the leases held now, as `connector nodes --json` shows them."""
    return {lease: row["name"] for row in inst.json("nodes") for lease in row["holds"] if ":" in lease
            or lease in ("deadlines", "retention")}


def holder_of(inst, lease):
    return holders(inst).get(lease)


def subjects(inst):
    """{subject: number of tickets with it}."""
    counts = {}
    for (subject,) in inst.rows("select subject from ticket"):
        counts[subject] = counts.get(subject, 0) + 1
    return counts


def wait_filed(inst, names, timeout=60):
    return wait_for(lambda: set(names) <= set(subjects(inst)), timeout, interval=0.3,
                    what=f"tickets {sorted(names)}")


def pair(tmp_path, sink, pg_url, dovecot, failover=FAILOVER, **ini):
    """Two nodes with the same scanner: mx1 started first (it takes the scanner), then mx2."""
    user = dovecot.new_user()
    entry = scanner(dovecot, user, idle=True, interval=2)
    first = node(tmp_path, sink, pg_url, "mx1", [entry], failover, **ini).start()
    wait_for(lambda: holder_of(first, LEASE) == "mx1", SLACK, interval=0.3, what="mx1 to hold the scanner")
    second = node(tmp_path, sink, pg_url, "mx2", [entry], failover, **ini).start()
    wait_for(lambda: {"mx1", "mx2"} <= {row["name"] for row in second.json("nodes")}, SLACK, interval=0.3,
             what="both nodes' heartbeats")
    return user, first, second


def stop_all(*nodes):
    for inst in nodes:
        if inst.proc is not None:
            try:
                os.killpg(inst.proc.pid, signal.SIGCONT)  # a frozen one must be able to stop
            except ProcessLookupError:
                pass
            inst.stop()


def test_one_node_scans_and_the_other_takes_over_after_kill_9(tmp_path, sink, pg_url, dovecot):
    user, mx1, mx2 = pair(tmp_path, sink, pg_url, dovecot)
    try:
        for n in range(3):
            dovecot.append(user, make_mail(subject=f"Before {n}", message_id=f"<before{n}@acme.example>"))
        wait_filed(mx1, [f"Before {n}" for n in range(3)])
        # only the holder scanned: mx2 stands by
        assert events(mx1, "imap.scanned") and not events(mx2, "imap.scanned")
        assert not events(mx2, "scanners.started")
        rows = {row["name"]: row for row in mx2.json("nodes")}
        assert rows["mx1"]["scanners"] == ["support"] and rows["mx2"]["scanners"] == []
        assert LEASE in rows["mx1"]["holds"] and "worker" in rows["mx1"]["holds"]
        assert [lease["name"] for lease in rows["mx1"]["leases"]].count(LEASE) == 1
        status = json.loads(mx1.cli("status", "--json", check=False).stdout)
        assert status["node"]["name"] == "mx1" and LEASE in status["node"]["holds"]
        assert LEASE not in json.loads(mx2.cli("status", "--json", check=False).stdout)["node"]["holds"]
        timers = [(name, t) for name, row in rows.items() for t in row["timers"]]
        assert sorted(t for _, t in timers) == ["deadlines", "retention"]  # each on one node
        mx1_pid = mx1.proc.pid
        mx1.kill9()  # the whole process group: daemon, worker, deliver
        killed = time.time()
        for n in range(3):
            dovecot.append(user, make_mail(subject=f"After {n}", message_id=f"<after{n}@acme.example>"))
        wait_for(lambda: events(mx2, "lease.acquired") and holder_of(mx2, LEASE) == "mx2", FAILOVER + SLACK,
                 interval=0.2, what="mx2 to take the scanner over")
        [acquired] = [e for e in events(mx2, "lease.acquired") if e["name"] == LEASE]
        took = at(acquired) - killed
        assert acquired["before"] == f"mx1 {mx1_pid}" and acquired["node"] == "mx2"
        wait_filed(mx2, [f"After {n}" for n in range(3)])
        counts = subjects(mx2)
        assert all(counts[f"{when} {n}"] == 1 for when in ("Before", "After") for n in range(3)), counts
        messages = mx2.rows("select message_id, count(*) from message group by message_id having count(*) > 1")
        assert messages == []
        print(f"takeover after kill -9: {took:.1f} s (failover_seconds = {FAILOVER})")
    finally:
        stop_all(mx1, mx2)


def test_sigterm_hands_the_scanner_over_at_once(tmp_path, sink, pg_url, dovecot):
    """failover_seconds = 30: a lease left to expire would take 20 s; a released one is
    taken at the standby's next try (5 s)."""
    user, mx1, mx2 = pair(tmp_path, sink, pg_url, dovecot, failover=30)
    try:
        mx1.stop()
        stopped = time.monotonic()
        assert [e["name"] for e in events(mx1, "lease.released")].count(LEASE) == 1
        wait_for(lambda: holder_of(mx2, LEASE) == "mx2", 30, interval=0.2, what="mx2 to take the scanner")
        assert time.monotonic() - stopped < 20  # before the lease (2/3 of 30 s) could have expired
        [released] = [e for e in events(mx1, "lease.released") if e["name"] == LEASE]
        [acquired] = [e for e in events(mx2, "lease.acquired") if e["name"] == LEASE]
        print(f"handover after SIGTERM: {at(acquired) - at(released):.1f} s (failover_seconds = 30)")
        dovecot.append(user, make_mail(subject="After the handover"))
        wait_filed(mx2, ["After the handover"])
        assert subjects(mx2) == {"After the handover": 1}
    finally:
        stop_all(mx1, mx2)


def test_a_frozen_node_loses_the_scanner_and_does_not_scan_when_it_wakes(tmp_path, sink, pg_url, dovecot):
    user, mx1, mx2 = pair(tmp_path, sink, pg_url, dovecot)
    try:
        dovecot.append(user, make_mail(subject="Before the freeze"))
        wait_filed(mx1, ["Before the freeze"])
        os.killpg(mx1.proc.pid, signal.SIGSTOP)
        wait_for(lambda: holder_of(mx2, LEASE) == "mx2", FAILOVER + SLACK, interval=0.2,
                 what="mx2 to take the frozen node's scanner")
        dovecot.append(user, make_mail(subject="While frozen"))
        wait_filed(mx2, ["While frozen"])
        woke_at = mx1.log.stat().st_size
        os.killpg(mx1.proc.pid, signal.SIGCONT)
        wait_for(lambda: [e for e in events(mx1, "lease.lost", woke_at) if e["name"] == LEASE], SLACK,
                 interval=0.2, what="the woken node to see its lease lost")
        for n in range(3):  # new mail wakes the woken node's IDLE, if it still idles
            dovecot.append(user, make_mail(subject=f"After waking {n}"))
        wait_filed(mx2, [f"After waking {n}" for n in range(3)])
        time.sleep(2)
        for event in ("imap.fetched", "imap.stored", "imap.scanned", "imap.flagged", "scanners.started"):
            assert events(mx1, event, woke_at) == [], event
        assert holder_of(mx2, LEASE) == "mx2"
        counts = subjects(mx2)
        assert set(counts.values()) == {1} and len(counts) == 5, counts
        # mx2 stops: the woken node takes the lease again, and only then scans
        mx2.stop()
        dovecot.append(user, make_mail(subject="Back on mx1"))
        wait_filed(mx1, ["Back on mx1"])
        text = mx1.log.read_bytes()[woke_at:].decode(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        order = [f"{e['event']} {e['name']}" if e["event"] == "lease.acquired" else e["event"] for e in lines]
        assert f"lease.acquired {LEASE}" in order and "imap.scanned" in order
        assert order.index(f"lease.acquired {LEASE}") < order.index("scanners.started") < order.index("imap.scanned")
        assert set(subjects(mx1).values()) == {1}
    finally:
        stop_all(mx1, mx2)


def test_deadlines_fire_once_and_pruning_runs_on_one_node(tmp_path, sink, pg_url):
    # the default failover: the workers run in the idle CPU class, and on a loaded machine a
    # lease of 2 s could move between them during the test (harmless, but not "one node")
    mx1 = node(tmp_path, sink, pg_url, "mx1", failover=30, retention__raw_days="1")
    mx2 = node(tmp_path, sink, pg_url, "mx2", failover=30, retention__raw_days="1")
    for inst in (mx1, mx2):
        (inst.path / "config" / "inboxes.yaml").write_text(INBOXES_YAML)
        (inst.path / "config" / "auto_emails.yaml").write_text(AUTO_EMAILS_YAML)
    mx1.start()
    mx2.start()
    try:
        for n in range(6):
            (mx1 if n % 2 else mx2).send(make_mail(subject=f"Due {n}", sender=f"c{n}@acme.example"))
        mx1.wait_processed(6, timeout=60)
        timers = wait_for(lambda: (h := holders(mx1)) and {"deadlines", "retention"} <= set(h) and h, SLACK,
                          interval=0.3, what="both timers held")
        with mx1.connect() as conn:  # every entry overdue, every mail three days old
            conn.execute("update inbox_entry set due_at = ?", (time.time() - 1,))
            conn.execute("update spool.spool set received_at = ?", (time.time() - 3 * 86400,))

        def fired():
            return mx1.rows("select count(*) from ticket_event where event = 'deadline_passed'")[0][0] == 6
        wait_for(fired, 60, interval=0.3, what="six deadlines")
        # pruning starts a minute after the worker; then the raw bytes are gone
        wait_for(lambda: mx1.rows("select count(*) from spool.spool where length(raw) > 0")[0][0] == 0, 120,
                 interval=1, what="the raw mail pruned")
        time.sleep(3)  # both workers look every second: still once
        assert mx1.rows("select count(*) from ticket_event where event = 'deadline_passed'")[0][0] == 6
        overdue = mx1.rows("select rcpt from outbox where kind = 'auto_email'")
        assert sorted(r[0] for r in overdue) == ['["bob@example.com"]'] * 6  # one auto-email per deadline
        by_node = {inst.path.name: inst for inst in (mx1, mx2)}
        fired_by = {name for name, inst in by_node.items() if events(inst, "deadline.passed")}
        pruned_by = {name for name, inst in by_node.items() if events(inst, "retention.pruned")}
        assert fired_by == {timers["deadlines"]} and pruned_by == {timers["retention"]}
    finally:
        stop_all(mx1, mx2)


def test_scanners_run_takes_the_scanners_lease_or_names_the_node_scanning(tmp_path, sink, pg_url, dovecot):
    """`connector scanners run NAME` on PostgreSQL: while a daemon holds the scanner's lease it
    scans nothing (exit 75, naming that node); with no daemon it takes the lease for the run,
    files the mail, and gives the lease back at once."""
    user = dovecot.new_user()
    entry = scanner(dovecot, user, idle=True, interval=2)
    first = node(tmp_path, sink, pg_url, "mx1", [entry]).start()
    try:
        wait_for(lambda: holder_of(first, LEASE) == "mx1", SLACK, interval=0.3, what="mx1 to hold the scanner")
        second = node(tmp_path, sink, pg_url, "mx2", [entry])
        refused = second.cli("scanners", "run", "support", check=False)
        assert refused.returncode == 75 and "is scanning on node mx1 (pid" in refused.stderr.decode(), refused
    finally:
        first.stop()
    dovecot.append(user, make_mail(subject="Run by hand").as_bytes())
    ran = second.cli("scanners", "run", "support", "--json")
    assert json.loads(ran.stdout)["imported"] == 1
    assert subjects(second) == {"Run by hand": 1}
    [(expired,)] = second.rows(f"SELECT expires_at <= EXTRACT(EPOCH FROM clock_timestamp()) FROM lease "
                               f"WHERE name = '{LEASE}'")
    assert expired                       # given back: a daemon started now scans at once
