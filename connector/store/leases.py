"""Leases: which process of which node runs a singleton, until when (issue 13).

A singleton is work that must run on one node at a time: each IMAP scanner
(`scanner:<name>`), the deadline timer (`deadlines`) and pruning
(`retention`). `connector.singletons` holds the leases of a process and
starts and stops the work; this module is their SQL, the same on both
backends, one statement each:

    acquire   take a lease that is free (released or expired) or already ours
    renew     push our lease's expiry on, if it is still ours
    release   expire our lease now, so another node takes it at once

Times are the database's clock (`dialect.clock`): the nodes' clocks differ,
the server's is one. A lease is identified by its holder's token (a random
id per process), not by node name and pid, which can repeat.

On SQLite (one machine, one node) `acquire` always succeeds: the one
daemon that runs there takes its leases over from its killed predecessor at
once instead of waiting for them to expire.
"""

from connector.store import dialect
from connector.store.models import Lease, database

SCANNER_PREFIX = "scanner:"
DEADLINES = "deadlines"
RETENTION = "retention"
TIMERS = (DEADLINES, RETENTION)


def scanner_lease(name):
    """The lease of the IMAP scanner `name`."""
    return f"{SCANNER_PREFIX}{name}"


def acquire(name, node, pid, token, lasts):
    """Take lease `name` for `lasts` seconds if it is free, expired or ours. Returns
    (taken, before): whether we hold it now, and its holder before ("node pid", or None)."""
    now = dialect.clock()
    free = f' WHERE "lease"."expires_at" <= {now} OR "lease"."token" = excluded."token"' \
        if dialect.is_postgres() else ""
    # the holder before, for the log only, read outside the transaction: on SQLite a read
    # before the write would make the write fail at once when another process wrote between
    row = database.execute_sql('SELECT "node", "pid" FROM "lease" WHERE "name" = ?', (name,)).fetchone()
    with database.atomic():
        taken = database.execute_sql(
            'INSERT INTO "lease" ("name", "node", "pid", "token", "acquired_at", "expires_at") '
            f'VALUES (?, ?, ?, ?, {now}, {now} + ?) '
            'ON CONFLICT ("name") DO UPDATE SET "node" = excluded."node", "pid" = excluded."pid", '
            '"token" = excluded."token", "acquired_at" = excluded."acquired_at", '
            f'"expires_at" = excluded."expires_at"{free} RETURNING "id"',
            (name, node, pid, token, lasts)).fetchone()
    return taken is not None, (f"{row[0]} {row[1]}" if row else None)


def renew(name, token, lasts):
    """Our lease `name` expires `lasts` seconds from now; False when it is no longer ours."""
    with database.atomic():
        return database.execute_sql(f'UPDATE "lease" SET "expires_at" = {dialect.clock()} + ? '
                                    'WHERE "name" = ? AND "token" = ?', (lasts, name, token)).rowcount == 1


def release(name, token):
    """Expire our lease `name` now (another node may take it at once); False when it was not ours."""
    with database.atomic():
        return database.execute_sql(f'UPDATE "lease" SET "expires_at" = {dialect.clock()} '
                                    'WHERE "name" = ? AND "token" = ?', (name, token)).rowcount == 1


def held(node=None):
    """The leases not expired (of `node`, or every node's), by name: [Lease] with `now`, the
    database's time, on each."""
    now = dialect.now()
    query = Lease.select().where(Lease.expires_at > now).order_by(Lease.name)
    if node is not None:
        query = query.where(Lease.node == node)
    rows = list(query)
    for row in rows:
        row.now = now
    return rows


def describe(lease):
    """A lease as `connector nodes` and `connector status` show it (times: the database's clock)."""
    return {"name": lease.name, "pid": lease.pid, "acquired_at": lease.acquired_at,
            "expires_in": round(max(lease.expires_at - lease.now, 0.0), 1)}
