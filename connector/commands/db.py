"""`db status`, `db upgrade`, `db prune`, `db vacuum`: the store's schema and size."""

import sys

from connector.commands.common import database_or_exit, emit, settings_or_exit
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
    open_store(settings.database, upgrade=settings.auto_upgrade)
    days = args.days if args.days is not None else settings.raw_days
    emit(args, {"raw_days": days, **prune(days)})
    return 0


def cmd_db_vacuum(args):
    path = database_or_exit(args)
    open_store(path)
    before = size(path)
    vacuum()
    emit(args, {"bytes_before": before, "bytes_after": size(path)})
    return 0


def register(subparsers):
    parser = subparsers.add_parser("db", help="the store: schema version, upgrade, retention, vacuum")
    inner = parser.add_subparsers(dest="db_command", metavar="ACTION")
    inner.required = True
    for name, handler, text in (
            ("status", cmd_db_status, "schema version: {version, latest, pending}"),
            ("upgrade", cmd_db_upgrade, "apply pending migrations (a backup <db>.bak-<version> first)"),
            ("prune", cmd_db_prune, "drop raw bytes older than [retention] raw_days now"),
            ("vacuum", cmd_db_vacuum, "give free pages back to the disk (locks the store while it runs)")):
        p = inner.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "prune":
            p.add_argument("--days", type=int, help="this age instead of [retention] raw_days")
        p.set_defaults(handler=handler)
