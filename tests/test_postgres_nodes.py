"""Several nodes on one PostgreSQL under load, killed (issue 13: "Tests and measurements").

One, two and three real daemons (tests/nodes.py) share one database and one relay;
a load of CONNECTOR_NODE_MESSAGES messages (1,000 by default; 5,000 is the issue's
figure, see README "Development") is spread over them, and one node after another
is killed with SIGKILL (its whole process group) and restarted while mail is
accepted, filed and delivered; one more node is killed for good while it holds the
lowest unfiled entries, which the other node must take back. At the end:

- every message that got a 250 is filed exactly once (one `message` row, one
  `done` processing row that is not a duplicate), nothing is shunted;
- every outgoing row is `sent` and was handed to the relay; a row the relay got
  twice is at most one per kill (the row in flight on the killed delivery
  process, README "PostgreSQL"); nothing reaches the relay that no row planned;
- no claim or lease is left past its expiry (each singleton lease is held by a live
  process).

PostgreSQL restarted under the multi-node load (`pg_ctl restart -m fast`, then
`-m immediate`): the intake answers 4xx meanwhile, nothing acknowledged is lost,
nothing is sent twice.
"""

import os
import time

import pytest

from conftest import wait_for
from nodes import Cluster, Load, Relay, OUTGOING_PER_MESSAGE, check, diagnose, report, wait_drained
from test_postgres_faults import own_server  # noqa: F401 (a fixture: a server of the test's own, restarted)

MESSAGES = int(os.environ.get("CONNECTOR_NODE_MESSAGES", "1000"))
RESTART_AFTER = 1.0    # seconds a killed node stays dead ("after a moment")
DRAIN_TIMEOUT = 600    # seconds for the backlog to drain after the load (the machine is shared)
STAGE_TIMEOUT = 180    # seconds for the next stage of the kill schedule (a stall fails sooner)


@pytest.fixture
def relay():
    r = Relay().start()
    yield r
    r.stop()


def assert_exactly_once(outcome, load, kills, label):
    assert load.refused == [], f"{label}: permanent refusals {load.refused[:5]}"
    assert outcome.not_filed == [], f"{label}: acknowledged, not filed: {outcome.not_filed[:10]}"
    assert outcome.filed_twice == {}, f"{label}: filed more than once: {dict(list(outcome.filed_twice.items())[:10])}"
    assert outcome.shunted == [], f"{label}: shunted {outcome.shunted[:5]}"
    assert outcome.unprocessed == 0, f"{label}"
    assert outcome.outbox >= OUTGOING_PER_MESSAGE * len(load.acked), f"{label}: fewer outgoing rows than planned"
    assert outcome.undelivered == [], f"{label}: not sent: {outcome.undelivered[:10]}"
    assert outcome.not_at_relay == [], f"{label}: never handed to the relay: {outcome.not_at_relay[:10]}"
    assert outcome.unknown_at_relay == 0, f"{label}"
    assert len(outcome.duplicate_rows) <= kills, \
        f"{label}: {len(outcome.duplicate_rows)} rows sent twice or more for {kills} kills: " \
        f"{dict(list(outcome.duplicate_rows.items())[:10])}"
    assert all(times == 2 for times in outcome.duplicate_rows.values()), f"{label}: a row sent 3 times or more"
    assert outcome.unexplained == [], \
        f"{label}: sent twice, not by a delivery killed with the row in flight (seconds after the first " \
        f"copy): {outcome.unexplained[:10]}"
    assert outcome.stuck_claims == [], f"{label}: claims held past their expiry: {outcome.stuck_claims}"


def run_with_kills(cluster, relay, schedule, messages):
    """The load over the cluster, killing node `index` (restarted RESTART_AFTER later) when
    the stage of `schedule` is reached: ("acked", fraction of the messages acknowledged) kills
    while mail is accepted, ("sent", fraction of the outgoing mails at the relay) while it is
    filed and delivered. Returns the load and the seconds until everything drained."""
    start = time.monotonic()
    load = Load(cluster, messages, threads=2 * len(cluster.nodes)).start()
    planned = OUTGOING_PER_MESSAGE * messages
    for stage, fraction, index in schedule:
        def reached():
            if stage == "acked":
                return len(load.acked) >= fraction * messages
            return relay.mails >= fraction * planned
        try:
            wait_for(reached, STAGE_TIMEOUT, interval=0.05, what=f"{stage} {fraction}")
        except AssertionError as exc:
            with cluster.connect() as conn:
                raise AssertionError(f"{exc} ({load.summary()}, {relay.mails} at the relay): {diagnose(conn)}") \
                    from None
        cluster.kill9(index)
        time.sleep(RESTART_AFTER)
        cluster.restart(index)
    assert load.wait(DRAIN_TIMEOUT), f"not every message acknowledged: {load.summary()}"
    wait_drained(cluster, DRAIN_TIMEOUT)
    return load, time.monotonic() - start


@pytest.mark.parametrize("count, schedule", [
    (1, [("acked", 0.3, 0)]),
    (2, [("acked", 0.3, 0), ("sent", 0.3, 1), ("sent", 0.6, 0)]),
    (3, [("acked", 0.3, 1), ("sent", 0.25, 2), ("sent", 0.5, 0), ("sent", 0.75, 1)]),
], ids=["1-node", "2-nodes", "3-nodes"])
def test_nodes_killed_under_load_file_every_acknowledged_message_once(tmp_path, postgres_server, relay,
                                                                      count, schedule):
    cluster = Cluster(tmp_path, postgres_server.new_database(), count, relay).start()
    try:
        load, elapsed = run_with_kills(cluster, relay, schedule, MESSAGES)
        outcome = check(cluster, load, relay)
    finally:
        cluster.stop()
    label = report(f"{count} nodes, {MESSAGES} messages", load, outcome, cluster, elapsed)
    print(label)
    assert len(load.acked) == MESSAGES, label
    assert_exactly_once(outcome, load, len(cluster.kills), label)


def pg_restart(server, mode):
    """`pg_ctl restart -m MODE` (the options the server was started with are kept)."""
    server._run("pg_ctl", "-D", server.data, "-w", "-m", mode, "-l", os.path.join(server.dir, "log"), "restart")


def test_postgresql_restarted_under_a_multi_node_load_loses_nothing(tmp_path, own_server, relay):
    messages = min(MESSAGES, 1000)
    cluster = Cluster(tmp_path, own_server.new_database(), 2, relay).start()
    start = time.monotonic()
    try:
        # paced so the load still runs while PostgreSQL restarts twice
        load = Load(cluster, messages, threads=4, pace=0.02).start()
        for fraction, mode in ((0.25, "fast"), (0.6, "immediate")):
            wait_for(lambda: len(load.acked) >= fraction * messages, DRAIN_TIMEOUT, interval=0.05,
                     what=f"{fraction} acknowledged")
            pg_restart(own_server, mode)
        assert load.wait(DRAIN_TIMEOUT), f"not every message acknowledged: {load.summary()}"
        wait_drained(cluster, DRAIN_TIMEOUT)
        outcome = check(cluster, load, relay)
        logs = cluster.logs()
    finally:
        cluster.stop()
    label = report(f"PostgreSQL restarted, {messages} messages", load, outcome, cluster, time.monotonic() - start)
    print(label)
    assert len(load.acked) == messages, label
    assert sum(load.deferred.values()) >= 1, f"no 4xx while PostgreSQL restarted: {label}"
    assert_exactly_once(outcome, load, 0, label)  # no kill: nothing may be sent twice
    assert any('"storage.fault"' in text for text in logs.values()), label


def test_a_dead_nodes_claims_are_taken_back_by_a_worker_already_holding_a_full_batch(tmp_path, postgres_server,
                                                                                      relay):
    """Node 1 is killed (and stays dead) while it holds the lowest unfiled entries and node 2's
    worker holds a full batch of later ones, which wait for those (mail is filed in arrival
    order): once node 1's claims run out, node 2 must take them back and file everything."""
    claims = pytest.importorskip("connector.store.claims", reason="no filing claims in this connector")
    messages = min(MESSAGES, 600)
    cluster = Cluster(tmp_path, postgres_server.new_database(), 2, relay).start()
    start = time.monotonic()
    try:
        load = Load(cluster, messages, threads=4).start()
        with cluster.connect() as conn:
            def node1_holds_the_lowest():
                held = dict(conn.execute("SELECT claimed_by, count(*) FROM filing_claim GROUP BY claimed_by"))
                lowest = conn.execute("SELECT claimed_by FROM filing_claim ORDER BY spool_id LIMIT 1").fetchone()
                return lowest == ("node1",) and held.get("node2", 0) >= claims.CLAIM_BATCH
            wait_for(node1_holds_the_lowest, STAGE_TIMEOUT, interval=0.05,
                     what="node 1 to hold the lowest unfiled entries, node 2 a full batch after them")
        cluster.kill9(0)
        assert load.wait(DRAIN_TIMEOUT), f"not every message acknowledged: {load.summary()}"
        wait_drained(cluster, STAGE_TIMEOUT)
        outcome = check(cluster, load, relay)
    finally:
        cluster.stop()
    label = report(f"node 1 killed for good, {messages} messages", load, outcome, cluster, time.monotonic() - start)
    print(label)
    assert_exactly_once(outcome, load, 1, label)
