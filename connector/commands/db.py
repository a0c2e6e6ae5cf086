"""`db status`, `db upgrade`, `db prune`, `db vacuum`, `db copy`, `db take-key`: the store's schema, size
and key."""

import sys

from connector.commands.common import (
    EX_CONFIG, database_or_exit, emit, ini_values_or_exit, open_store_of, positive_int, settings_or_exit)
from connector.store import migrations
from connector.store.db import exists, open_store, open_without_upgrade, size
from connector.store.retention import prune, vacuum


def cmd_db_status(args):
    path = database_or_exit(args)
    if not exists(path):
        print(f"connector: no database at {path} (hint: `connector run` or `connector db upgrade` creates it)",
              file=sys.stderr)
        return 1
    emit(args, migrations.status(open_without_upgrade(path)))
    return 0


def cmd_db_upgrade(args):
    path = database_or_exit(args)
    before = migrations.status(open_without_upgrade(path))["pending"] if exists(path) else []
    db = open_store(path)
    emit(args, {"applied": before, **migrations.status(db)})
    return 0


def cmd_db_prune(args):
    settings = settings_or_exit(args)
    open_store_of(args, settings)
    days = args.days if args.days is not None else settings.raw_days
    emit(args, {"raw_days": days, **prune(days)})
    return 0


def cmd_db_vacuum(args):
    path = database_or_exit(args)
    open_store_of(args, upgrade=True)   # README: `db vacuum` upgrades first
    before = size(path)
    vacuum()
    emit(args, {"bytes_before": before, "bytes_after": size(path)})
    return 0


def cmd_db_take_key(args):
    """The store takes this data directory's hmac.key as its own (the one it knew is lost)."""
    settings = settings_or_exit(args)
    open_store_of(args, settings)
    from connector.store import storekey
    from connector.store.db import load_hmac_key
    before, now = storekey.take(load_hmac_key(settings.data_dir))
    emit(args, {"fingerprint_before": before, "fingerprint": now})
    return 0


def cmd_db_copy(args):
    """Copy the SQLite store into an empty PostgreSQL database and verify it (connector.store.copy)."""
    from connector.health.state import pid_alive, read_state
    from connector.settings.loader import data_dir_of
    from connector.settings.values import PostgresURL
    from connector.store.copy import TargetNotEmpty, copy
    values = ini_values_or_exit(args)
    source, target = values["database"], PostgresURL.of(args.to, origin="connector db copy", key="--to")
    if isinstance(source, PostgresURL) or target is None:
        print("connector: db copy copies the SQLite store of [connector] database into a PostgreSQL database "
              "(hint: connector db copy --to postgresql://user@host/dbname, with database = a file)", file=sys.stderr)
        return EX_CONFIG
    if not exists(source):
        print(f"connector: no database at {source}", file=sys.stderr)
        return 1
    state = read_state(data_dir_of(values))
    if state and not state.get("stopped_at") and pid_alive(state["pid"]):
        print(f"connector: the daemon runs (pid {state['pid']}); stop it first, or mail it accepts after the "
              "copy stays behind in the SQLite file", file=sys.stderr)
        return 1
    target.password_file = values["database_password_file"]
    open_store(source, upgrade=values["auto_upgrade"])  # at the latest schema, as the target is made
    try:
        report = copy(source, target)
    except TargetNotEmpty as exc:
        print(f"connector: {args.to} is not empty ({exc}); copy into a new database "
              "(createdb -O connector connector)", file=sys.stderr)
        return 1
    if args.json:
        emit(args, report)
    else:
        for table, entry in report["tables"].items():
            print(f"{table:20} {entry['rows']:>8} rows  {'ok' if entry['verified'] else 'DIFFERS'}")
        print("copied and verified: set [connector] database to the new URL and start the connector"
              if report["verified"] else "the copy differs from the source: keep using the SQLite file")
    return 0 if report["verified"] else 1


def register(subparsers):
    parser = subparsers.add_parser("db", help="the store: schema version, upgrade, retention, vacuum")
    inner = parser.add_subparsers(dest="db_command", metavar="ACTION")
    inner.required = True
    for name, handler, text in (
            ("status", cmd_db_status, "schema version: {version, latest, pending}"),
            ("upgrade", cmd_db_upgrade, "apply pending migrations (a backup <db>.bak-<version> first)"),
            ("prune", cmd_db_prune, "drop raw bytes older than [retention] raw_days now"),
            ("vacuum", cmd_db_vacuum, "give free pages back to the disk (locks the store while it runs)"),
            ("copy", cmd_db_copy, "copy the SQLite store into an empty PostgreSQL database and verify it"),
            ("take-key", cmd_db_take_key, "the store takes this node's hmac.key (only when the store's own key "
                                          "is lost for good: mail signed with it is not recognised then)")):
        p = inner.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "copy":
            p.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host:port/dbname")
        if name == "prune":
            p.add_argument("--days", type=positive_int, metavar="N",
                           help="drop the raw bytes of mail older than N days (1 or more) instead of "
                                "[retention] raw_days (0 there: keep everything)")
        p.set_defaults(handler=handler)
