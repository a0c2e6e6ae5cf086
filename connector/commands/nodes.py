"""`connector nodes [--json] [--all]`: the connector nodes seen lately on this store, with
their name, version, what they run and their last heartbeat (`connector.store.nodes`).

`holds` is what a node runs: its background processes (from its heartbeat) and then the
leases it holds (`connector.store.leases`: `scanner:<name>`, `deadlines`, `retention`);
`processes`, `leases` (with pid, acquired_at and seconds until they expire), `scanners`
and `timers` say the same by kind."""

from connector.commands.common import emit, open_store_of
from connector.log import iso


def node_row(node, alive, now, held):
    """One node as `connector nodes --json` shows it; `held`: its leases not expired."""
    from connector.store.leases import SCANNER_PREFIX, TIMERS, describe
    names = [lease.name for lease in held]
    return {"name": node.name, "version": node.version, "pid": node.pid, "started_at": iso(node.started_at),
            "last_heartbeat": iso(node.heartbeat_at), "age_seconds": round(max(now - node.heartbeat_at, 0.0), 1),
            "alive": alive, "holds": list(node.holds) + names, "processes": list(node.holds),
            "leases": [dict(describe(lease), acquired_at=iso(lease.acquired_at)) for lease in held],
            "scanners": [n[len(SCANNER_PREFIX):] for n in names if n.startswith(SCANNER_PREFIX)],
            "timers": [n for n in names if n in TIMERS]}


def cmd_nodes(args):
    open_store_of(args)
    from connector.store import dialect, leases, nodes
    now = dialect.now()  # heartbeats are on the database's clock
    held = {}
    for lease in leases.held():
        held.setdefault(lease.node, []).append(lease)
    rows = [node_row(n, nodes.alive(n, now), now, held.get(n.name, [])) for n in nodes.seen(now, everyone=args.all)]
    if args.json:
        emit(args, rows)
        return 0
    if not rows:
        print(f"no node seen in the last {int(nodes.RECENT)} seconds")
    for row in rows:
        print(f"{row['name']}  {row['version']}  pid {row['pid']}  "
              f"{'alive' if row['alive'] else 'silent'}, last heartbeat {row['last_heartbeat']} "
              f"({row['age_seconds']} s ago)  holds {', '.join(row['holds']) or 'nothing'}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser("nodes", help="the connector nodes seen lately, with their last heartbeat")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--all", action="store_true", help="every node ever seen, not only the recent ones")
    parser.set_defaults(handler=cmd_nodes)
