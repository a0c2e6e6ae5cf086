"""Several connector nodes on one PostgreSQL, for the multi-node tests (issue 13).

A `Cluster` is N real `connector run` daemons on loopback (conftest's `Instance`),
each with its own directory and data_dir (one hmac.key copied into each), its
own SMTP port and `[node] name`,
all on the same `database = postgresql://...` (a fresh database of a private
server, tests/pg.py), all relaying to one `Relay`: an aiosmtpd server in this
process that counts every (Message-ID, envelope recipient) it is handed, so a
mail sent twice is seen. `kill9(i)` takes node i's whole process group away
(daemon, workers, delivery) as a dead host would; `restart(i)` brings it back.

A `Load` sends a fixed set of messages spread over the nodes from several
client threads with smtplib, each keeping a session open as an MTA's
connection cache does, and records exactly which messages got a 250. A 4xx
or a dropped session is retried later, with the same bytes, on the next node
(as an MTA tries the next MX): so a message whose 250 a kill swallowed comes
twice and must be filed once.

`check(cluster, load, relay)` reads the store and the relay afterwards and
returns what the tests assert (`Outcome`): every acknowledged message filed
exactly once, nothing shunted, every outgoing row handed to the relay, the
duplicates, and the claims still held past their expiry.
"""

import collections
import json
import os
import re
import secrets
import smtplib
import threading
import time
from dataclasses import dataclass, field

import psycopg
from aiosmtpd.controller import Controller

from conftest import Instance, free_port, wait_for

SENDER_DOMAIN = "cust.example"  # no account: every message opens a ticket of its own
PUBLIC = "support@example.com"
STAFF = "staff:\n  - name: Dana Desk\n    emails: [dana@example.com]\n    receive: all\n"
# every message a new sender: lift the auto-response budgets so each gets its auto-response
LIMITS = {f"connector__{key}": "1000000" for key in
          ("auto_responses_per_hour", "auto_responses_per_domain_per_hour", "auto_responses_total_per_hour")}
OUTGOING_PER_MESSAGE = 2  # the auto-response to the customer and the distribution to Dana
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
FAILOVER = 6.0  # [node] failover_seconds of the test nodes: a dead node's singletons move on within it


def failover_key(seconds):
    """`[node] failover_seconds` for Instance(), where this connector knows the key."""
    from connector.settings.schema import KEYS
    known = any((key.section, key.name) == ("node", "failover_seconds") for key in KEYS)
    return {"node__failover_seconds": str(seconds)} if known else {}


class Relay:
    """The outbound relay of every node: counts each (Message-ID, recipient) handed to it."""

    class Handler:
        def __init__(self, relay):
            self.relay = relay

        async def handle_DATA(self, server, session, envelope):
            head = envelope.original_content.split(b"\r\n\r\n", 1)[0]
            found = MESSAGE_ID.search(head)
            message_id = found.group(1).decode() if found else ""
            now = time.monotonic()
            with self.relay.lock:
                for rcpt in envelope.rcpt_tos:
                    self.relay.counts[(message_id, rcpt)] += 1
                    if self.relay.counts[(message_id, rcpt)] > 1:
                        self.relay.times.setdefault((message_id, rcpt), [self.relay.first[(message_id, rcpt)]]).append(now)
                    else:
                        self.relay.first[(message_id, rcpt)] = now
                self.relay.mails += 1
            return "250 OK"

    def __init__(self):
        self.port = free_port()
        self.counts = collections.Counter()
        self.first = {}  # (Message-ID, recipient) -> when it was first received (monotonic)
        self.times = {}  # (Message-ID, recipient) -> when each copy was received, for those received twice
        self.mails = 0
        self.lock = threading.Lock()
        self.controller = Controller(self.Handler(self), hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.counts), dict(self.times)


class Cluster:
    """N connector daemons on one PostgreSQL database, one relay."""

    def __init__(self, root, url, count, relay, **ini):
        self.url = url
        self.relay = relay
        self.failover = float(ini.get("node__failover_seconds", FAILOVER))
        self.nodes = []
        self.kills = []  # (node index, monotonic time) of each kill -9
        key = secrets.token_bytes(32)  # one hmac.key on every node, as README "PostgreSQL" says to copy it
        for index in range(count):
            path = root / f"node{index + 1}"
            # the very same URL on every node, as on separate hosts: the wake-up sockets of a node
            # on PostgreSQL are named after the URL and the [node] name (connector.store.wakeup)
            node = Instance(path, relay.port, connector__database=url, connector__data_dir="var",
                            connector__log_level="info", node__name=f"node{index + 1}", **LIMITS,
                            **failover_key(FAILOVER), **ini)
            node.path.joinpath("config", "staff.yaml").write_text(STAFF)
            node.path.joinpath("config", "accounts.yaml").write_text("accounts: []\n")
            share_key(node.path / "var", key)
            self.nodes.append(node)

    @property
    def ports(self):
        return [node.port for node in self.nodes]

    def start(self, index=None):
        """Start every node (or one), and wait until its worker and delivery run; a node that
        does not come up stops the whole cluster (no daemon outlives a failed test)."""
        try:
            for node in self.nodes if index is None else [self.nodes[index]]:
                offset = node.log.stat().st_size if node.log.exists() else 0
                node.start()
                wait_for(lambda: all(e in self._log_since(node, offset)
                                     for e in ('"worker.started"', '"deliver.started"')),
                         60, interval=0.2, what=f"{node.path.name}'s worker and delivery to run")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _log_since(node, offset):
        with open(node.log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def kill9(self, index):
        """Node `index` dies as a host would: SIGKILL to its whole process group at once."""
        self.nodes[index].kill9()
        self.kills.append((index, time.monotonic()))

    def restart(self, index):
        self.start(index)

    def stop(self):
        for node in self.nodes:
            node.stop()

    def alive(self):
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def connect(self):
        return psycopg.connect(self.url, autocommit=True)

    def logs(self):
        return {node.path.name: node.log.read_text(errors="replace") if node.log.exists() else ""
                for node in self.nodes}


def share_key(data_dir, key):
    """The cluster's hmac.key in a node's data_dir (0600 in a 0700 folder, as the connector makes it)."""
    from connector.store.db import DIR_MODE, FILE_MODE, KEY_FILE
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    path.write_bytes(key)
    path.chmod(FILE_MODE)


def mail(prefix, number):
    """The bytes of load message `number` (the same bytes at every retry) and its Message-ID."""
    message_id = f"<{prefix}-{number}@{SENDER_DOMAIN}>"
    raw = (f"From: Customer {number} <c{number}.{prefix}@{SENDER_DOMAIN}>\r\nTo: {PUBLIC}\r\n"
           f"Subject: {prefix} request {number}\r\nMessage-ID: {message_id}\r\n"
           f"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
           f"Hello,\r\nmy printer number {number} does not print.\r\nThanks\r\n").encode()
    return message_id, raw


class Load:
    """`total` messages over the cluster's nodes from `threads` client threads.

    `acked`: the Message-IDs that got a 250. A 4xx (`deferred`) or a dropped session or
    refused connection (`dropped`) puts the message back, retried RETRY_AFTER later on
    the next node; a 5xx is recorded in `refused` and not retried (it must not happen).
    """

    RETRY_AFTER = 0.2

    def __init__(self, cluster, total, threads=6, prefix="load", pace=0.0):
        self.cluster = cluster
        self.prefix = prefix
        self.total = total
        self.pace = pace  # seconds each thread waits between two messages (0: as fast as it can)
        self.todo = collections.deque((0.0, n) for n in range(1, total + 1))
        self.lock = threading.Lock()
        self.acked = set()
        self.deferred = collections.Counter()   # SMTP code -> how many 4xx answers
        self.dropped = 0
        self.refused = []  # (Message-ID, code, text): permanent failures
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def _next(self):
        with self.lock:
            if not self.todo:
                return None
            not_before, number = self.todo.popleft()
        if not_before > time.monotonic():
            time.sleep(min(not_before - time.monotonic(), self.RETRY_AFTER))
        return number

    def _again(self, number):
        with self.lock:
            self.todo.append((time.monotonic() + self.RETRY_AFTER, number))

    def done(self):
        with self.lock:
            return not self.todo and len(self.acked) == self.total

    def _run(self, index):
        target = index  # the node this thread sends to; the next one after a failure
        smtp = None
        while not self.stop.is_set():
            number = self._next()
            if number is None:
                if self.done():
                    break
                time.sleep(0.05)  # others hold the last messages: one may come back
                continue
            message_id, raw = mail(self.prefix, number)
            try:
                if smtp is None:
                    port = self.cluster.ports[target % len(self.cluster.ports)]
                    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
                smtp.sendmail(f"c{number}.{self.prefix}@{SENDER_DOMAIN}", [PUBLIC], raw)
            except (smtplib.SMTPException, OSError) as exc:
                smtp = self._drop(smtp)
                self._failed(message_id, number, exc)
                target += 1  # the next MX
                time.sleep(self.RETRY_AFTER)  # and back off a moment, as an MTA does
                continue
            with self.lock:
                self.acked.add(message_id)
            if self.pace:
                time.sleep(self.pace)
        self._drop(smtp)

    def _failed(self, message_id, number, exc):
        """Count a failed try; a 4xx or a dropped session is tried again later, a 5xx is not."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()))
        elif isinstance(exc, smtplib.SMTPResponseException):
            code, text = exc.smtp_code, exc.smtp_error
        else:
            code, text = None, repr(exc)
        with self.lock:
            if code is None:
                self.dropped += 1
            elif 400 <= code < 500:
                self.deferred[code] += 1
            else:
                self.refused.append((message_id, code, text))
                return
        self._again(number)

    @staticmethod
    def _drop(smtp):
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass
        return None

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        return self.done()

    def summary(self):
        return {"acked": len(self.acked), "deferred": dict(self.deferred), "dropped": self.dropped,
                "refused": len(self.refused)}


@dataclass
class Outcome:
    """What the store and the relay say at the end of a run."""
    spooled: int = 0
    unprocessed: int = 0                                  # spool entries without a `done` processing row
    shunted: list = field(default_factory=list)           # (spool id, reason)
    not_filed: list = field(default_factory=list)         # acknowledged, no message row / filed row
    filed_twice: dict = field(default_factory=dict)       # Message-ID -> times filed (message rows, non-duplicates)
    copies: int = 0                                        # spool entries that were duplicates (a lost 250)
    outbox: int = 0
    undelivered: list = field(default_factory=list)       # (outbox id, status) still active or failed
    not_at_relay: list = field(default_factory=list)      # (outbox id, recipient) never handed to the relay
    duplicate_rows: dict = field(default_factory=dict)    # outbox Message-ID -> the most times one recipient got it
    unexplained: list = field(default_factory=list)       # duplicates no kill explains (see `explain`)
    unknown_at_relay: int = 0                              # mail at the relay that no outbox row planned
    stuck_claims: list = field(default_factory=list)      # (table, column, rows) held past their expiry

    def summary(self):
        return {"spooled": self.spooled, "unprocessed": self.unprocessed, "shunted": len(self.shunted),
                "not_filed": len(self.not_filed), "filed_twice": len(self.filed_twice), "copies": self.copies,
                "outbox": self.outbox, "undelivered": len(self.undelivered), "not_at_relay": len(self.not_at_relay),
                "duplicate_rows": len(self.duplicate_rows), "unexplained": len(self.unexplained), "duplicate_sends": sum(self.duplicate_rows.values())
                - len(self.duplicate_rows), "unknown_at_relay": self.unknown_at_relay,
                "stuck_claims": self.stuck_claims}


def drained(conn):
    """Whether nothing is left to do: every spool entry processed, no outbox row active."""
    unprocessed = conn.execute('SELECT 1 FROM spool.spool s LEFT JOIN processing p ON p.spool_id = s.id '
                               "WHERE p.state IS NULL OR p.state = 'queued' LIMIT 1").fetchone()
    active = conn.execute("SELECT 1 FROM outbox WHERE status IN ('pending', 'deferred') LIMIT 1").fetchone()
    return unprocessed is None and active is None


def wait_drained(cluster, timeout, interval=1.0):
    """Wait (looking once a `interval`: the store is not counted every few ms) until drained."""
    with cluster.connect() as conn:
        try:
            return wait_for(lambda: drained(conn), timeout, interval=interval, what="every message filed and sent")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {diagnose(conn)}") from None


def diagnose(conn):
    """Where the work stands, for a failure's message: the lowest unfiled entries and who
    claims them, and the outbox by status."""
    unfiled = conn.execute("SELECT s.id FROM spool.spool s LEFT JOIN processing p ON p.spool_id = s.id "
                           "WHERE p.spool_id IS NULL ORDER BY s.id LIMIT 5").fetchall()
    text = f"first unfiled spool ids {[row[0] for row in unfiled]}"
    if conn.execute("SELECT to_regclass('filing_claim')").fetchone()[0]:
        rows = conn.execute(f"SELECT claimed_by, claim_token, count(*), min(spool_id), max(spool_id), "
                            f"round(min(claimed_until - {NOW})::numeric, 1) FROM filing_claim "
                            "GROUP BY claimed_by, claim_token ORDER BY min(spool_id)").fetchall()
        text += "; filing claims (node, token, entries, lowest, highest, seconds left): " + repr(rows)
    statuses = conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
    return text + f"; outbox {dict(statuses)}"


def check(cluster, load, relay):
    out = Outcome()
    with cluster.connect() as conn:
        out.spooled = conn.execute("SELECT count(*) FROM spool.spool").fetchone()[0]
        out.unprocessed = conn.execute(
            "SELECT count(*) FROM spool.spool s LEFT JOIN processing p ON p.spool_id = s.id "
            "WHERE p.state IS NULL OR p.state != 'done'").fetchone()[0]
        out.shunted = conn.execute("SELECT spool_id, reason FROM processing WHERE state = 'shunted'").fetchall()
        filed = collections.Counter(row[0] for row in conn.execute(
            "SELECT message_id FROM processing WHERE state = 'done' AND action != 'duplicate'"))
        messages = collections.Counter(row[0] for row in conn.execute(
            "SELECT message_id FROM message WHERE direction = 'in'"))
        out.copies = conn.execute("SELECT count(*) FROM processing WHERE action = 'duplicate'").fetchone()[0]
        out.not_filed = sorted(m for m in load.acked if not filed[m] or not messages[m])
        out.filed_twice = {m: max(filed[m], messages[m]) for m in set(filed) | set(messages)
                           if filed[m] > 1 or messages[m] > 1}
        rows = conn.execute("SELECT id, message_id, rcpt, status FROM outbox").fetchall()
    out.stuck_claims = settle_claims(cluster, cluster.failover + 5)
    counts, times = relay.snapshot()
    out.outbox = len(rows)
    planned = set()
    for outbox_id, message_id, rcpt, status in rows:
        rcpts = rcpt if isinstance(rcpt, list) else json.loads(rcpt)
        if status != "sent":
            out.undelivered.append((outbox_id, status))
        most = 0
        for address in rcpts:
            planned.add((message_id, address))
            if counts[(message_id, address)] == 0:
                out.not_at_relay.append((outbox_id, address))
            most = max(most, counts[(message_id, address)])
        if most > 1:
            out.duplicate_rows[message_id] = most
    out.unexplained = explain(out.duplicate_rows, times, [at for _, at in cluster.kills])
    out.unknown_at_relay = sum(n for key, n in counts.items() if key not in planned)
    return out


# Columns that hold a claim's expiry (epoch seconds, the database's clock; NULL: released), by
# the names the claims may give them (h/pgclaims: outbox and filing_claim `claimed_until`).
EXPIRY_NAMES = re.compile(r"(lease|claim)\w*(until|expires?(_at)?)$|^(lease|claimed)_until$|^expires_at$")
LEASE_TABLE = "lease"  # the singletons' leases: every node wants the timers' (connector.store.leases)
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"


def stuck_claims(conn, grace=1.0):
    """What is held past its expiry once the work is done: (table, column, rows) of claims
    expired more than `grace` s ago and never released (the work they held was done by
    whoever took them over, who releases them), and, in the lease table, each lease expired
    and not taken over, or held by a process that is gone (the nodes run here, so their pids
    can be looked at). A claim a node holds while it works is fine; one left past its expiry
    is what strands mail, or says that a kill's work was never taken back."""
    found = []
    columns = conn.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema IN ('public', 'spool')").fetchall()
    for schema, table, column in columns:
        if not EXPIRY_NAMES.search(column) or table == LEASE_TABLE:
            continue
        rows = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}" < {NOW} - %s',
                            (grace,)).fetchone()[0]
        if rows:
            found.append((f"{schema}.{table}", column, rows))
    if any(table == LEASE_TABLE for _, table, _ in columns):
        for name, node, pid, left in conn.execute(f'SELECT name, node, pid, expires_at - {NOW} FROM "{LEASE_TABLE}"'):
            if left < -grace:
                found.append((LEASE_TABLE, name, f"expired {-left:.1f} s ago, last held by {node} pid {pid}"))
            elif not _running(pid):
                found.append((LEASE_TABLE, name, f"held for {left:.1f} s more by {node} pid {pid}, which is gone"))
    return found


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def settle_claims(cluster, timeout):
    """What `stuck_claims` still finds once it has had `timeout` seconds (a dead holder's
    lease is taken over within failover_seconds) to find nothing; looked at once a second."""
    deadline = time.monotonic() + timeout
    with cluster.connect() as conn:
        while True:
            stuck = stuck_claims(conn)
            if not stuck or time.monotonic() > deadline:
                return stuck
            time.sleep(1.0)


IN_FLIGHT = 5.0  # seconds before a kill within which the killed node's last mail reached the relay


def explain(duplicate_rows, times, kills):
    """The duplicates a kill does not explain, as (Message-ID, receipt times). The window the
    README promises: the one row in flight on a delivery process killed after the relay's
    250 and before its commit. Such a row reached the relay first shortly before a kill
    (IN_FLIGHT: the commit that did not happen follows the 250 at once), and again only
    after it; each kill explains one row at most."""
    unexplained, used = [], set()
    firsts = sorted((min(t for (m, _), ts in times.items() if m == message_id for t in ts), message_id)
                    for message_id in duplicate_rows)
    for first, message_id in firsts:
        seconds = sorted(t for (m, _), ts in times.items() if m == message_id for t in ts)
        kill = next((i for i, at in enumerate(kills) if i not in used and at - IN_FLIGHT <= first <= at
                     and all(t > at for t in seconds[1:])), None)
        if kill is None:
            unexplained.append((message_id, [round(t - seconds[0], 3) for t in seconds]))
        else:
            used.add(kill)
    return unexplained


def report(label, load, outcome, cluster, elapsed):
    """One line for the test's output (`pytest -s`, or the assertion message)."""
    return (f"{label}: {elapsed:.0f} s, {len(cluster.nodes)} nodes, kills {[i + 1 for i, _ in cluster.kills]}, "
            f"load {load.summary()}, outcome {outcome.summary()}, loadavg {os.getloadavg()[0]:.1f}")
