"""Heartbeats are written and judged on the database's clock, as leases are
(`connector.store.nodes`): a host whose clock is ten minutes ahead still sees a running
node as alive, and its own heartbeat is not written ten minutes into the future (so a
node with a slow or fast clock neither takes a stopped node for a running one and refuses
to start, nor a running one for a stopped one). On both backends."""

import io
import json
import time
from contextlib import redirect_stdout

from conftest import Instance, wait_for

from connector.cli import main

AHEAD = 600.0  # seconds this host's clock is made to run ahead


def nodes_json(inst):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["-c", str(inst.ini), "nodes", "--json"]) == 0
    return json.loads(out.getvalue())


def test_a_host_whose_clock_is_ahead_judges_heartbeats_on_the_databases_clock(tmp_path, sink, monkeypatch):
    inst = Instance(tmp_path, sink.port)
    inst.start()
    try:
        wait_for(lambda: inst.json("nodes"), 20, interval=0.3, what="the daemon's first heartbeat")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + AHEAD)
        [row] = nodes_json(inst)
        assert row["alive"] and row["age_seconds"] < 60, row
        from connector import __version__
        from connector.store import nodes
        nodes.beat("skewed", __version__, 1, "run", time.time(), [])
        skewed = {r["name"]: r for r in nodes_json(inst)}["skewed"]
        monkeypatch.setattr(time, "time", real)
        assert skewed["alive"] and skewed["age_seconds"] < 60, skewed
        with inst.connect() as conn:   # written at the database's time, not ten minutes ahead
            [(written,)] = conn.execute("select heartbeat_at from node where name = 'skewed'").fetchall()
        assert abs(written - time.time()) < 60, written - time.time()
    finally:
        inst.stop()
