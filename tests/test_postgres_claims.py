"""Several nodes on one PostgreSQL share the work by claims (issue 13, `connector.store.claims`).

Real processes on one real PostgreSQL (tests/pg.py): `connector worker` and
`connector deliver` started as on different nodes (each its own `[node] name`
and data directory, one database), a real aiosmtpd relay counting what it
receives. Each mail is filed once, each outgoing one sent once; a process
killed with SIGKILL while it holds claims leaves them to the others once its
lease (`[node] failover_seconds`, short here) ran out: its spool entries are
filed by another, its outbox row sent by another, at most one duplicate for a
row the relay had accepted when the process died.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest
from aiosmtpd.controller import Controller

from conftest import Instance, Sink, free_port, make_mail, wait_for

LEASE = 2  # [node] failover_seconds of these nodes: the lease of a claim


class Node:
    """One node's installation (ini, data directory with the shared hmac.key) and the
    background processes it runs, each in its own process group."""

    def __init__(self, root, name, url, relay_port, key=None, **ini):
        self.name = name
        # the nodes share a machine here: each its own URL of the one database, as the wake-up
        # sockets of a PostgreSQL store are named after its URL (on separate hosts: the same URL)
        url = f"{url}?application_name={name}"
        self.inst = Instance(root / name, relay_port, connector__database=url, connector__data_dir="var",
                             node__name=name, node__failover_seconds=str(LEASE), **ini)
        var = root / name / "var"
        var.mkdir(mode=0o700, exist_ok=True)
        if key is not None:  # every node signs and checks VERP addresses with the same key
            shutil.copy(key, var / "hmac.key")
        self.procs = {}

    def log(self, kind):
        return self.inst.path / f"{kind}.log"

    def start(self, kind):
        self.procs[kind] = subprocess.Popen(
            [sys.executable, "-m", "connector", "-c", str(self.inst.ini), kind], stdout=open(self.log(kind), "ab"),
            stderr=subprocess.STDOUT, cwd=self.inst.path, start_new_session=True)
        wait_for(lambda: f"{kind}.started" in self.log(kind).read_text() or self._died(kind), 60,
                 what=f"{self.name}'s {kind} to start")
        return self

    def _died(self, kind):
        if self.procs[kind].poll() is not None:
            raise AssertionError(f"{self.name} {kind} exited: {self.log(kind).read_text()[-2000:]}")

    def kill9(self, kind):
        os.killpg(self.procs[kind].pid, signal.SIGKILL)
        self.procs.pop(kind).wait()

    def stop(self):
        for kind, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            assert "Traceback" not in self.log(kind).read_text(), self.log(kind).read_text()[-3000:]
        self.procs = {}

    def events(self, kind, name):
        lines = [json.loads(line) for line in self.log(kind).read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]


@pytest.fixture
def cluster(tmp_path, pg_url):
    """make(names, relay_port) -> Nodes on one database (made at the latest schema first)."""
    made = []

    def make(names, relay_port, **ini):
        first = Node(tmp_path, names[0], pg_url, relay_port, **ini)
        first.inst.open_store()  # the schema, and this process bound to it for the test's own rows
        from connector.store.db import load_hmac_key
        load_hmac_key(first.inst.path / "var")
        key = first.inst.path / "var" / "hmac.key"
        nodes = [first] + [Node(tmp_path, name, pg_url, relay_port, key=key, **ini) for name in names[1:]]
        made.extend(nodes)
        return nodes
    yield make
    for node in made:
        node.stop()


def spool_mail(count):
    """`count` mails in the spool, in order: new tickets, a thread (a parent and its reply),
    and copies of one mail (the first is filed, the others are duplicates)."""
    from connector.store.spool import store_message
    ids, threads = [], []
    for n in range(count):
        if n % 10 == 3:
            parent = f"<p{n}@acme.example>"
            raw = make_mail(subject=f"Thread {n}", sender=f"t{n}@acme.example", message_id=parent).as_bytes()
            threads.append(parent)
        elif n % 10 == 4:
            raw = make_mail(subject=f"Re: Thread {n - 1}", sender=f"t{n - 1}@acme.example",
                            message_id=f"<r{n}@acme.example>",
                            headers={"In-Reply-To": threads[-1], "References": threads[-1]}).as_bytes()
        elif n % 10 in (7, 8):
            raw = make_mail(subject=f"Copied {n // 10}", sender="copy@beta.example",
                            message_id=f"<copy{n // 10}@beta.example>").as_bytes()
        else:
            raw = make_mail(subject=f"Printer {n}", sender=f"c{n}@acme.example",
                            message_id=f"<m{n}@acme.example>").as_bytes()
        ids.append(store_message(raw, rcpt_to=["support@example.com"], intake="test"))
    return ids


def filed(inst):
    return inst.rows("SELECT p.spool_id, p.state, p.action, p.reason, p.node FROM processing p ORDER BY p.spool_id")


def assert_filed_once(inst, spooled, count, kills=0):
    """Each entry filed once, in arrival order. A number is used once; a worker killed in the
    middle of a filing may leave the one it took unused (the sequence is not rolled back)."""
    rows = filed(inst)
    got = [r[0] for r in rows]
    assert got == spooled, (sorted(set(spooled) - set(got)), sorted(set(got) - set(spooled)))  # each, once
    assert {r[1] for r in rows} == {"done"}, [r for r in rows if r[1] != "done"][:3]   # no shunt
    assert not [r for r in rows if "lock" in (r[3] or "") or "serializ" in (r[3] or "")]
    numbers = [n for (n,) in inst.rows("SELECT number FROM ticket ORDER BY number")]
    assert numbers == sorted(set(numbers)) and numbers[-1] - len(numbers) <= kills  # none twice, gaps: kills
    assert len(numbers) == count - count // 10 * 2                               # a reply joins, a copy is one
    opened_by = [s for (s,) in inst.rows(
        "SELECT MIN(m.spool_id) FROM ticket t JOIN message m ON m.ticket_id = t.id GROUP BY t.number ORDER BY t.number")]
    assert opened_by == sorted(opened_by)                                        # numbered in arrival order
    for (message_id, copies) in inst.rows("SELECT message_id, COUNT(*) FROM message GROUP BY message_id"):
        assert copies == 1, message_id                                           # filed once
    assert inst.rows("SELECT COUNT(*) FROM filing_claim") == [(0,)]              # no claim left behind
    return rows


def test_three_nodes_file_one_spool_each_mail_once(cluster, sink):
    nodes = cluster(["n1", "n2", "n3"], sink.port)
    for node in nodes:
        node.start("worker")
    count = 300
    spooled = spool_mail(count)
    claimants = set()  # the node names seen on the claims while the spool is filed

    def all_filed():
        claimants.update(name for (name,) in nodes[0].inst.rows("SELECT DISTINCT claimed_by FROM filing_claim"))
        return len(filed(nodes[0].inst)) >= count
    wait_for(all_filed, 240, interval=0.2, what="every mail filed")
    assert claimants == {"n1", "n2", "n3"}
    rows = assert_filed_once(nodes[0].inst, spooled, count)
    per_node = Counter(r[4] for r in rows)
    assert set(per_node) == {"n1", "n2", "n3"}, per_node                    # the work was shared
    assert min(per_node.values()) >= 10, per_node
    for thread in range(3, count, 10):                                     # a reply joins its parent's ticket
        tickets = nodes[0].inst.rows(f"SELECT ticket_id FROM message WHERE message_id IN "
                                     f"('<p{thread}@acme.example>', '<r{thread + 1}@acme.example>')")
        assert len(tickets) == 2 and len(set(tickets)) == 1, (thread, tickets)


def test_a_worker_killed_holding_claims_leaves_them_to_another_node(cluster, sink):
    first, second = cluster(["mx1", "mx2"], sink.port)
    count = 120
    spooled = spool_mail(count)
    first.start("worker")
    held = wait_for(lambda: (rows := first.inst.rows(
        "SELECT spool_id FROM filing_claim WHERE claimed_by = 'mx1' AND spool_id NOT IN "
        "(SELECT spool_id FROM processing)")) and len(filed(first.inst)) >= 5 and rows, 120, interval=0.02,
        what="mx1 filing, with entries claimed")
    first.kill9("worker")
    left = {s for (s,) in first.inst.rows("SELECT spool_id FROM filing_claim WHERE spool_id NOT IN "
                                          "(SELECT spool_id FROM processing)")}
    assert left and {s for (s,) in held} & left                       # it died holding claims
    second.start("worker")
    wait_for(lambda: len(filed(first.inst)) >= count, 240, interval=0.5, what="every mail filed")
    rows = assert_filed_once(first.inst, spooled, count, kills=1)
    by = dict((r[0], r[4]) for r in rows)
    assert {by[s] for s in left} == {"mx2"}                           # what mx1 held, mx2 filed
    expired = second.events("worker", "filing.claim_expired")
    assert expired and {e["claimed_by"] for e in expired} == {"mx1"}
    assert left <= {s for e in expired for s in e["spool_ids"]}


def test_a_worker_stopped_gives_its_claims_back_at_once(cluster, sink):
    [node] = cluster(["mx1"], sink.port)
    spool_mail(120)
    node.start("worker")
    wait_for(lambda: node.inst.rows("SELECT COUNT(*) FROM filing_claim")[0][0] > 0, 120, interval=0.02,
             what="mx1 holding claims")
    node.stop()                                   # SIGTERM: it finishes the mail in hand, then stops
    assert node.inst.rows("SELECT COUNT(*) FROM filing_claim") == [(0,)]
    assert len(filed(node.inst)) < 120            # stopped before the end: the rest waits for anyone


class GatedSink(Sink):
    """A relay that counts each Message-ID it took and, while `hold` is set, keeps its answer
    to DATA back: the mail is taken (a relay's queue has it), the 250 not sent yet, so a
    client killed meanwhile never learns that it was delivered."""

    class Handler(Sink.Handler):
        async def handle_DATA(self, server, session, envelope):
            answer = await super().handle_DATA(server, session, envelope)
            self.sink.receiving.set()
            while self.sink.hold.is_set():
                await asyncio.sleep(0.01)
            return answer

    def __init__(self):
        super().__init__()
        self.hold, self.receiving = threading.Event(), threading.Event()

    def start(self):
        self.controller = Controller(self.Handler(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def message_ids(self):
        from email import message_from_bytes
        return Counter(message_from_bytes(raw)["Message-ID"] for _, _, raw in self.messages)


@pytest.fixture
def relay():
    sink = GatedSink()
    sink.start()
    yield sink
    sink.hold.clear()
    sink.stop()


def queue_outgoing(count):
    """`count` outbox rows due now, each its own Message-ID."""
    import time

    from connector.store import outbox
    now = time.time()
    ids = []
    for n in range(count):
        msg = make_mail(subject=f"Answer {n}", sender="support@example.com", to=f"c{n}@acme.example",
                        message_id=f"<out{n}@example.com>")
        ids.append(outbox.queue(dict(kind="distribution", mail_from="support@example.com",
                                     rcpt=[f"c{n}@acme.example"], to=[f"c{n}@acme.example"], subject=f"Answer {n}",
                                     message_id=f"<out{n}@example.com>", raw=msg.as_bytes(), next_attempt_at=now,
                                     created_at=now)))
    return ids


def outbox_rows(inst):
    return inst.rows("SELECT id, status, claimed_by, claimed_until, sent_by, message_id FROM outbox ORDER BY id")


def test_three_delivery_processes_send_each_row_once(cluster, relay):
    nodes = cluster(["d1", "d2", "d3"], relay.port)
    count = 150
    queue_outgoing(count)
    for node in nodes:
        node.start("deliver")
    wait_for(lambda: all(r[1] == "sent" for r in outbox_rows(nodes[0].inst)), 240, interval=0.5,
             what="every row sent")
    received = relay.message_ids()
    assert sorted(received) == sorted(f"<out{n}@example.com>" for n in range(count))
    assert set(received.values()) == {1}                                    # each sent exactly once
    rows = outbox_rows(nodes[0].inst)
    assert all(r[3] is None for r in rows)                                  # every claim released
    sent_by = Counter(r[4] for r in rows)
    assert set(sent_by) <= {"d1", "d2", "d3"} and sum(sent_by.values()) == count, sent_by
    print("rows sent per node:", dict(sent_by))   # how they share is the scheduler's (one may take all)
    shown = nodes[1].inst.json("outbox", "list")
    assert {o["sent_by"] for o in shown} == set(sent_by) and all(o["claimed_until"] is None for o in shown)
    assert {o["claimed_by"] for o in shown} <= {"d1", "d2", "d3"}


def test_a_delivery_killed_after_the_relay_took_the_mail_sends_it_once_more_at_most(cluster, relay):
    first, second = cluster(["mx1", "mx2"], relay.port)
    count = 20
    queue_outgoing(count)
    relay.hold.set()                             # the relay takes DATA and keeps its 250 back
    first.start("deliver")
    wait_for(relay.receiving.is_set, 60, what="mx1 sending its first row")
    [(held, claimed_by, in_flight)] = first.inst.rows(
        "SELECT id, claimed_by, message_id FROM outbox WHERE claimed_until IS NOT NULL")
    assert claimed_by == "mx1"
    first.kill9("deliver")                       # after the relay received the mail, before its commit
    relay.hold.clear()                           # the relay accepts it (its 250 goes to a closed socket)
    second.start("deliver")
    wait_for(lambda: all(r[1] == "sent" for r in outbox_rows(second.inst)), 120, interval=0.5,
             what="every row sent")
    received = relay.message_ids()
    assert len(received) == count
    duplicates = {m: n for m, n in received.items() if n > 1}
    assert duplicates == {in_flight: 2}          # the one in flight, sent again once
    rows = {r[0]: r for r in outbox_rows(second.inst)}
    assert rows[held][4] == "mx2" and {r[4] for r in rows.values()} == {"mx2"}
    expired = second.events("deliver", "outbox.claim_expired")
    assert [(e["outbox_id"], e["claimed_by"]) for e in expired] == [(held, "mx1")]
    assert all(r[3] is None for r in rows.values())


def test_a_slow_send_keeps_its_claim_past_the_lease(cluster, relay):
    """The relay keeps its answer back longer than the lease: the row stays its sender's
    (the lease is renewed), so the other node never sends it too."""
    import time
    first, second = cluster(["mx1", "mx2"], relay.port, outbound__timeout="60")  # slow, not timed out
    queue_outgoing(1)
    relay.hold.set()
    first.start("deliver")
    wait_for(relay.receiving.is_set, 60, what="mx1 sending")
    second.start("deliver")
    time.sleep(LEASE * 2.5)
    [(claimed_by, until)] = first.inst.rows("SELECT claimed_by, claimed_until FROM outbox")
    assert claimed_by == "mx1" and until is not None
    relay.hold.clear()
    wait_for(lambda: outbox_rows(first.inst)[0][1] == "sent", 60, what="the row sent")
    time.sleep(LEASE)
    assert relay.message_ids() == {"<out0@example.com>": 1}
    assert outbox_rows(first.inst)[0][4] == "mx1"


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_store_from_before_the_claims_opens_and_upgrades(tmp_path, sink, store, request):
    """A store as a release before 0014_claims left it (no claim columns, no filing_claim)
    upgrades on either backend, keeps its rows, and then records the node that files."""
    ini = {"node__name": "old1"}
    if store == "postgresql":
        ini.update(connector__database=request.getfixturevalue("pg_url"), connector__data_dir="var")
    inst = Instance(tmp_path, sink.port, **ini)
    inst.json("db", "upgrade")
    inst.cli("inject", "--sender", "ann@acme.example", "--recipient", "support@example.com",
             input=make_mail(subject="Before").as_bytes())
    with inst.connect() as conn:
        for table, column in (("processing", "node"), ("outbox", "claimed_by"), ("outbox", "claim_token"),
                              ("outbox", "claimed_until"), ("outbox", "sent_by")):
            conn.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        conn.execute('DROP TABLE "filing_claim"')
        conn.execute("DELETE FROM schema_migration WHERE name = '0014_claims'")
    assert inst.json("db", "status")["pending"] == ["0014_claims"]
    inst.start()
    try:
        states = inst.wait_processed(1, timeout=60)
        assert [row[1] for row in states] == ["done"]
        inst.send(make_mail(subject="After"))
        inst.send(make_mail(subject="An offer", sender="sales@stranger.example", to="notifications@example.com"))
        inst.wait_processed(3, timeout=60)
        inst.wait_delivered(timeout=60)
    finally:
        inst.stop()
    assert inst.json("db", "status")["pending"] == []
    assert inst.rows("SELECT node FROM processing ORDER BY spool_id") == [("old1",)] * 3
    [item] = inst.inbound()                          # the offer, in triage: which node filed it
    assert item["subject"] == "An offer" and item["filed_by"] == "old1"
    assert inst.rows("SELECT COUNT(*) FROM filing_claim") == [(0,)]
    assert {(o["status"], o["sent_by"]) for o in inst.outbox()} == {("sent", "old1")}


def test_an_entry_committed_after_later_ones_is_still_filed(tmp_path, pg_url, monkeypatch):
    """Spool ids come from a sequence when a mail is spooled and are committed a moment later:
    one spooled by another node (or a pipe) may become visible after higher ids were filed.
    The runner's floor trails by SETTLE (long here), so it is filed all the same."""
    import time

    import psycopg

    from connector.app import open_services
    from connector.pipeline import runner as runner_module
    from connector.settings import load_settings
    from connector.store.spool import store_message
    monkeypatch.setattr(runner_module, "SETTLE", 600.0)
    inst = Instance(tmp_path, free_port(), connector__database=pg_url, connector__data_dir="var")
    runner = runner_module.Runner(open_services(load_settings(inst.ini)))
    raw = make_mail(subject="Late", message_id="<late@acme.example>").as_bytes()
    with psycopg.connect(pg_url) as late:           # an intake whose commit comes late
        late_id = late.execute('INSERT INTO spool.spool (received_at, intake, rcpt_to, raw, size, sha256) '
                               'VALUES (%s, %s, %s, %s, %s, %s) RETURNING id',
                               (time.time(), "smtp", '["support@example.com"]', raw, len(raw), "0" * 64)).fetchone()[0]
        later = [store_message(make_mail(subject=f"Later {n}").as_bytes(), rcpt_to=["support@example.com"],
                               intake="smtp") for n in range(3)]
        for _ in range(3):
            runner.drain()
        assert [r[0] for r in filed(inst)] == later and late_id < later[0]
    runner.drain()                                   # committed now, below everything filed
    assert [r[0] for r in filed(inst)] == [late_id] + later


def test_nodes_on_one_host_with_one_url_have_their_own_wakeup_sockets(pg_url):
    """Named after the URL alone, a second node's `connector deliver` on the same host found
    its socket taken and refused to start ("already running"), restarting forever."""
    from connector.settings.values import PostgresURL
    from connector.store.db import open_store
    from connector.store.wakeup import DELIVER, Waker
    wakers = []
    try:
        for node in ("mx1", "mx2"):
            url = PostgresURL.of(pg_url)
            url.node = node
            open_store(url)
            wakers.append(Waker(None, DELIVER))
        assert all(w.sock is not None for w in wakers) and wakers[0].name != wakers[1].name
    finally:
        for waker in wakers:
            waker.close()


def test_a_daemon_restarted_after_kill_9_takes_its_own_claims_back_at_once(tmp_path, pg_url, sink):
    """With the default 30 s lease, a daemon killed while its processes hold spool and outbox
    claims and a lease resumes at once when restarted: it frees what its dead run held (the
    run's id is in daemon.lock), and keeps what a process of that run still alive holds."""
    inst = Instance(tmp_path / "solo", sink.port, connector__database=pg_url, connector__data_dir="var",
                    node__name="solo")
    inst.start()
    inst.kill9()
    pid, run = (tmp_path / "solo" / "var" / "daemon.lock").read_text().split()
    dead, alive = f"solo/{run}/{pid}/aa", f"solo/{run}/{os.getpid()}/bb"   # this test lives: "a child left"
    zombie = subprocess.Popen(["true"])   # exits, and nobody reaps it: a killed daemon's child in a container
    wait_for(lambda: open(f"/proc/{zombie.pid}/stat").read().rpartition(")")[2].split()[0] == "Z", 10,
             what="a zombie")
    undead = f"solo/{run}/{zombie.pid}/cc"
    inst.open_store()
    from connector.store.spool import store_message
    spool_id = store_message(make_mail(subject="Held by the dead run").as_bytes(),
                             mail_from="ann@acme.example", rcpt_to=["support@example.com"], intake="smtp")
    third = store_message(make_mail(subject="Held by a zombie").as_bytes(),
                          mail_from="cy@acme.example", rcpt_to=["support@example.com"], intake="smtp")
    other = store_message(make_mail(subject="Held by a living one").as_bytes(),
                          mail_from="bob@acme.example", rcpt_to=["support@example.com"], intake="smtp")
    with inst.connect() as conn:
        for spool, token in ((spool_id, dead), (other, alive), (third, undead)):
            conn.execute("INSERT INTO filing_claim (spool_id, claimed_by, claim_token, claimed_until) "
                         "VALUES (?, 'solo', ?, EXTRACT(EPOCH FROM now()) + 3600)", (spool, token))
        conn.execute("INSERT INTO lease (name, node, pid, token, acquired_at, expires_at) VALUES "
                     "('deadlines', 'solo', ?, ?, EXTRACT(EPOCH FROM now()), EXTRACT(EPOCH FROM now()) + 3600)",
                     (int(pid), dead))
    inst.start()
    try:
        wait_for(lambda: inst.rows(f"SELECT state FROM processing WHERE spool_id = {spool_id}") == [("done",)],
                 15, what="the dead run's entry filed, long before its 30 s lease ran out")
        [taken] = [json.loads(line) for line in inst.log.read_text().splitlines()
                   if line.startswith("{") and '"claims.taken_back"' in line]
        assert (taken["previous_run"], taken["filing"], taken["leases"], taken["kept"]) == (run, 2, 1, [os.getpid()])
        wait_for(lambda: inst.rows(f"SELECT state FROM processing WHERE spool_id = {third}") == [("done",)], 15,
                 what="the zombie's entry filed")
        assert inst.rows(f"SELECT claim_token FROM filing_claim WHERE spool_id = {other}") == [(alive,)]
        assert inst.rows(f"SELECT spool_id FROM processing WHERE spool_id = {other}") == []  # kept: not filed yet
    finally:
        inst.stop()
        zombie.wait()


def test_a_second_daemon_with_a_running_nodes_name_refuses_to_start(tmp_path, pg_url, sink):
    """A copied ini with the same `[node] name` and its own data directory (a second host)
    would share the first node's row in `connector nodes`: it refuses to start in one line
    naming the name and the hint. The first node's own restart after kill -9 is no clash."""
    first, second = (Instance(tmp_path / where, sink.port, connector__database=pg_url, connector__data_dir="var",
                              node__name="mx1") for where in ("host-a", "host-b"))
    first.start()
    try:
        wait_for(lambda: first.rows("SELECT name FROM node") == [("mx1",)], 20, what="mx1's heartbeat")
        (second.path / "var").mkdir(mode=0o700)
        shutil.copy(first.path / "var" / "hmac.key", second.path / "var" / "hmac.key")   # the store's one key
        refused = second.cli("run", check=False)
        assert refused.returncode == 1, refused
        [line] = refused.stderr.decode().strip().splitlines()
        assert "[node] name 'mx1' is in use by another running daemon" in line and "give each node its own" in line
        first.kill9()
        with socket.socket() as blocker:     # a start refused on the way (its port taken) ...
            blocker.bind(("127.0.0.1", first.port))
            blocker.listen()
            assert first.cli("run", check=False).returncode == 1
        first.start()                        # ... leaves its predecessor's fresh heartbeat no clash
        wait_for(lambda: '"daemon.started"' in first.log.read_text().split('"daemon.started"', 1)[1], 20,
                 what="mx1 started again")
    finally:
        first.stop()


def test_a_node_without_the_stores_hmac_key_refuses_to_start(tmp_path, pg_url, sink):
    """A second node started without the first one's hmac.key made a key of its own and its
    mail's bounces were refused by the other node (an outside test): it refuses to start,
    naming its key file; with the key copied it runs."""
    first, second = (Instance(tmp_path / where, sink.port, connector__database=pg_url, connector__data_dir="var",
                              node__name=where) for where in ("mx1", "mx2"))
    first.start()
    try:
        refused = second.cli("run", check=False)
        assert refused.returncode == 1, refused
        [line] = refused.stderr.decode().strip().splitlines()
        key = second.path / "var" / "hmac.key"
        assert line.startswith(f"connector: {key}: this key is not the one the store's mail is signed with"), line
        shutil.copy(first.path / "var" / "hmac.key", key)
        second.start()
        second.stop()
    finally:
        first.stop()
