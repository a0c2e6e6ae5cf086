"""The nodes: each daemon (`[node] name`) writes a heartbeat row every BEAT_EVERY
seconds from a thread beside its event loop; `connector nodes` lists the nodes seen
within RECENT. One row per name, updated in place: a node's history is its log. Heartbeats are
written and judged on the database's clock (`dialect.clock`, as leases are): the
nodes' own clocks differ, and a node whose clock is a minute behind would take a
stopped node for a running one (and refuse to start), one ahead the reverse.
"""

import peewee

from connector.store import dialect
from connector.store.models import Node

BEAT_EVERY = 10.0       # seconds between two heartbeats of a node
RECENT = 300.0          # `connector nodes` shows the nodes seen within this many seconds (--all: every one)
ALIVE_WITHIN = 3 * BEAT_EVERY  # a node whose last heartbeat is older missed three: not alive


class NameInUse(Exception):
    """Another daemon that runs now has this `[node] name` (a copied ini on a second host)."""

    def __init__(self, node, age):
        super().__init__(
            f"[node] name {node.name!r} is in use by another running daemon on this database (pid {node.pid}, "
            f"version {node.version}, last heartbeat {age:.0f} s ago): give each node its own [node] name "
            f"(the default is the host name); if that daemon has stopped, start this one again in "
            f"{max(ALIVE_WITHIN - age, 1):.0f} s")


def check_name_free(name, previous):
    """At a daemon's start (PostgreSQL): NameInUse when the node row of `name` is alive and not
    written by this data directory's previous run (`previous`: the daemon lock's Run, or None).
    Runs are told apart by their random id (pids repeat across hosts: containers, cloned VMs);
    a row from before ids were written by the pid."""
    row, now = Node.get_or_none(Node.name == name), dialect.now()
    if row is None or not alive(row, now):
        return
    if previous is not None and (row.run == previous.instance if row.run else row.pid == previous.pid):
        return  # our own run before this one (killed, or stopped a moment ago)
    raise NameInUse(row, now - row.heartbeat_at)


def beat(name, version, pid, run, started_at, holds):
    """Write this node's heartbeat (one upsert, at the database's time); `run`: the daemon's
    run id (its daemon lock's)."""
    now = peewee.SQL(dialect.clock())
    row = {Node.version: version, Node.pid: pid, Node.run: run, Node.started_at: started_at,
           Node.heartbeat_at: now, Node.holds: holds}
    Node.insert(name=name, version=version, pid=pid, run=run, started_at=started_at, heartbeat_at=now,
                holds=holds).on_conflict(conflict_target=[Node.name], update=row).execute()


def seen(now, everyone=False):
    """The nodes seen within RECENT (all with `everyone`), by name."""
    query = Node.select().order_by(Node.name)
    if not everyone:
        query = query.where(Node.heartbeat_at >= now - RECENT)
    return list(query)


def alive(node, now):
    return now - node.heartbeat_at <= ALIVE_WITHIN
