"""`connector nodes [--json] [--all]`: the connector nodes seen lately on this store, with
their name, version, what they run and their last heartbeat (`connector.store.nodes`)."""

import time

from connector.commands.common import emit, iso, open_store_of


def cmd_nodes(args):
    open_store_of(args)
    from connector.store import nodes
    now = time.time()
    rows = [{"name": n.name, "version": n.version, "pid": n.pid, "started_at": iso(n.started_at),
             "last_heartbeat": iso(n.heartbeat_at), "age_seconds": round(max(now - n.heartbeat_at, 0.0), 1),
             "alive": nodes.alive(n, now), "holds": n.holds}
            for n in nodes.seen(now, everyone=args.all)]
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
