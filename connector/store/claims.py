"""Claims: how the filing workers and delivery processes of several nodes share one
PostgreSQL store (issue 13) without taking the same work twice. SQLite keeps its
one-node scheme (filing partitions, one delivery process) and never comes here.

A claim is a lease written in its own short transaction: the node's name
(`claimed_by`), the claiming process's token (`claim_token`, so two processes of
one node, or one restarted after a crash, never take each other's work for
their own) and an expiry (`claimed_until`) in the database server's clock, so
the nodes' clocks need not agree. The lease is `[node] failover_seconds`;
its holder renews it while it works, a dead process's lease runs out and its
work goes back to the pool. Candidates are read `FOR UPDATE SKIP LOCKED`, so
processes claiming at the same instant take different rows without waiting for
each other, and the claim itself is conditional (free or expired), so two can
never both hold one.

- Filing (`SpoolClaims`): a worker holds up to CLAIM_BATCH spool entries (the
  lowest waiting ids, so arrival order is kept as far as it can be); the claim
  is deleted in the transaction that files or shunts the entry. Filing twice is
  impossible anyway (the filing transaction re-reads the entry's state under
  the write lock): the claims only share the work, so their commits do not
  wait for the disk (synchronous_commit off for that transaction alone).
- Delivery (`claim_outbox_row` ...): one outbox row at a time, claimed and
  committed before the relay is contacted, released in the transaction that
  records the outcome. A process killed after the relay's 250 and before that
  commit leaves the row claimed: it is sent again, once, when the lease ran
  out; never more, as a renewed lease keeps a slow send its own. That claim is
  committed durably (a claim lost to a crash of PostgreSQL could let another
  node send the row in flight too).
"""

import os
import secrets

from connector.store import dialect
from connector.store.models import OUTBOX_ACTIVE, SPOOL_QUEUED, database

CLAIM_BATCH = 20      # spool entries a filing worker holds at most (decided ahead while earlier ones are filed)
LOOK_EVERY = 0.05     # seconds between two claims while the entries held wait for earlier ones
NO_ID = 2 ** 62       # above every spool id
MIN_LEASE = 1.0       # seconds: the shortest lease, whatever [node] failover_seconds says
NOW = "EXTRACT(EPOCH FROM statement_timestamp())::float8"  # the database's clock, in epoch seconds


def lease_of(settings):
    """The lease of a claim, in seconds: `[node] failover_seconds` (at least MIN_LEASE)."""
    return max(settings.failover_seconds, MIN_LEASE)


INSTANCE_ENV = "CONNECTOR_INSTANCE"  # the daemon's random id for this run, inherited by its children


def new_token(node):
    """This process's claim and lease token: its node, its daemon's run (INSTANCE_ENV, "-"
    when not started by a daemon), its pid and a random part (a restarted process has another)."""
    return f"{node}/{os.environ.get(INSTANCE_ENV, '-')}/{os.getpid()}/{secrets.token_hex(4)}"


def pid_alive(pid):
    """Whether process `pid` runs on this host (the claims of a dead run, the daemon `status` judges). A zombie does not: a killed daemon's children
    stay zombies until someone reaps them (in a container, maybe never), and kill(pid, 0)
    succeeds on one. Without /proc, the kernel's kill(pid, 0) answers (another user's: alive)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        return os.kill(pid, 0) is None
    except PermissionError:
        return True
    except ProcessLookupError:
        return False


def take_back(node, instance):
    """At a daemon's start, before its children run: free at once the spool and outbox claims
    and the leases of the processes of its predecessor run `instance` (read from the daemon
    lock, so that run is over), instead of waiting `[node] failover_seconds` for them to
    expire. A process of that run still alive (an orphan finishing a send) keeps its own; they
    expire as usual. Returns {"filing": n, "outbox": n, "leases": n, "kept": [pids]}."""
    prefix = f"{node}/{instance}/"
    tokens = {row[0] for row in database.execute_sql(
        'SELECT "claim_token" FROM "filing_claim" WHERE starts_with("claim_token", ?) UNION '
        'SELECT "claim_token" FROM "outbox" WHERE starts_with("claim_token", ?) AND "claimed_until" IS NOT NULL '
        'UNION SELECT "token" FROM "lease" WHERE starts_with("token", ?)', (prefix, prefix, prefix)).fetchall()}
    pid_of = {token: token.rsplit("/", 2)[-2] for token in tokens}
    kept = sorted({int(pid) for pid in pid_of.values() if pid.isdigit() and pid_alive(int(pid))})
    dead = sorted(token for token, pid in pid_of.items() if not (pid.isdigit() and int(pid) in kept))
    counts = {"filing": 0, "outbox": 0, "leases": 0, "kept": kept}
    if dead:
        with database.atomic():
            counts["filing"] = database.execute_sql(
                'DELETE FROM "filing_claim" WHERE "claim_token" = ANY(?)', (dead,)).rowcount
            counts["outbox"] = database.execute_sql(
                'UPDATE "outbox" SET "claimed_until" = NULL WHERE "claim_token" = ANY(?) '
                'AND "claimed_until" IS NOT NULL', (dead,)).rowcount
            counts["leases"] = database.execute_sql(
                f'UPDATE "lease" SET "expires_at" = {dialect.clock()} WHERE "token" = ANY(?) '
                f'AND "expires_at" > {dialect.clock()}',
                (dead,)).rowcount
    return counts


# -- filing -------------------------------------------------------------------

_RENEW_SPOOL = f'UPDATE "filing_claim" SET "claimed_until" = {NOW} + ? WHERE "claim_token" = ? RETURNING "spool_id"'
_FREE = f'(k."spool_id" IS NULL OR k."claimed_until" < {NOW})'
_UNFILED = ('SELECT s."id", k."claimed_by" FROM "spool"."spool" s LEFT JOIN "processing" p ON p."spool_id" = s."id" '
            f'LEFT JOIN "filing_claim" k ON k."spool_id" = s."id" WHERE s."id" >= ? AND s."id" < ? AND p."spool_id" IS NULL '
            f'AND {_FREE} '
            'ORDER BY s."id" LIMIT ? FOR UPDATE OF s SKIP LOCKED')
_REQUEUED = ('SELECT p."spool_id", k."claimed_by" FROM "processing" p LEFT JOIN "filing_claim" k '
             f'ON k."spool_id" = p."spool_id" WHERE p."state" = ? AND {_FREE} ORDER BY p."spool_id" LIMIT ? '
             'FOR UPDATE OF p SKIP LOCKED')
_TAKE_SPOOL = (f'INSERT INTO "filing_claim" ("spool_id", "claimed_by", "claim_token", "claimed_until") '
               f'SELECT x, ?, ?, {NOW} + ? FROM unnest(?::bigint[]) AS x ON CONFLICT ("spool_id") DO UPDATE '
               'SET "claimed_by" = EXCLUDED."claimed_by", "claim_token" = EXCLUDED."claim_token", '
               f'"claimed_until" = EXCLUDED."claimed_until" WHERE "filing_claim"."claimed_until" < {NOW} '
               'RETURNING "spool_id"')


class SpoolClaims:
    """The spool entries one filing process holds, renewed every third of the lease."""

    def __init__(self, node, lease, monotonic):
        self.node, self.lease, self.monotonic = node, lease, monotonic
        self.token = new_token(node)
        self.held = []         # the entries claimed and not known to be done, lowest first
        self.renew_at = 0.0    # monotonic time of the next renewal
        self.look_at = 0.0     # while entries are held: monotonic time of the next claim

    def take(self, floor):
        """Renew the held claims when due and claim more: up to CLAIM_BATCH, and when that many
        wait (for earlier entries held by another process) the free ones before them, so one
        whose holder died is taken when its lease ran out. Returns (the ids held, lowest first;
        {node: [ids]} of the expired claims of other processes taken back)."""
        now = self.monotonic()
        renew, look = now >= self.renew_at, not self.held or now >= self.look_at
        if not (renew or look):
            return self.held, {}
        taken_back = {}
        with database.atomic():
            # a spool claim only shares the work (the filing re-checks under the write lock), so
            # its commit need not wait for the disk; an outbox claim's does (see the module's doc)
            database.execute_sql("SET LOCAL synchronous_commit TO OFF")
            if renew:
                self.held = sorted(row[0] for row in database.execute_sql(
                    _RENEW_SPOOL, (self.lease, self.token)).fetchall())
                self.renew_at = now + self.lease / 3
            if look:
                full = len(self.held) >= CLAIM_BATCH
                want, below = (CLAIM_BATCH, self.held[-1]) if full else (CLAIM_BATCH - len(self.held), NO_ID)
                rows = database.execute_sql(_UNFILED, (floor, below, want)).fetchall()
                rows += database.execute_sql(_REQUEUED, (SPOOL_QUEUED, want)).fetchall()
                previous = dict(rows)
                got = [row[0] for row in database.execute_sql(
                    _TAKE_SPOOL, (self.node, self.token, self.lease, sorted(previous))).fetchall()] if rows else []
                for spool_id in got:
                    if previous[spool_id] is not None:
                        taken_back.setdefault(previous[spool_id], []).append(spool_id)
                self.held = sorted(set(self.held) | set(got))
                self.look_at = now if got else now + LOOK_EVERY
        return self.held, taken_back

    def done(self, spool_id):
        """The entry is filed, shunted, or was processed by another: no longer held."""
        if spool_id in self.held:
            self.held.remove(spool_id)

    def release_all(self):
        """Give every held entry back to the pool at once (the process stops or reloads)."""
        database.execute_sql('DELETE FROM "filing_claim" WHERE "claim_token" = ?', (self.token,))
        self.held = []


def release_spool(spool_id):
    """Delete the entry's claim (in the transaction that files or shunts it)."""
    database.execute_sql('DELETE FROM "filing_claim" WHERE "spool_id" = ?', (spool_id,))


# -- delivery -----------------------------------------------------------------

_ACTIVE = ", ".join("?" * len(OUTBOX_ACTIVE))


def _claim_outbox_sql(columns):
    returned = ", ".join('o."%s"' % c for c in columns)
    return (f'UPDATE "outbox" o SET "claimed_by" = ?, "claim_token" = ?, "claimed_until" = {NOW} + ? '
            f'FROM (SELECT "id", "claimed_by" AS previous, "claimed_until" AS was FROM "outbox" '
            f'WHERE "status" IN ({_ACTIVE}) AND "next_attempt_at" <= ? '
            f'AND ("claimed_until" IS NULL OR "claimed_until" < {NOW}) '
            'ORDER BY "next_attempt_at", "id" LIMIT 1 FOR UPDATE SKIP LOCKED) c WHERE o."id" = c."id" '
            f'RETURNING {returned}, c.previous, c.was')


_claim_sql = {}


def claim_outbox_row(columns, node, token, lease, now):
    """Claim the outbox row due first at `now` (the node's clock, as `next_attempt_at`) that
    nobody holds, and commit the claim: (the row's `columns`, the node whose expired claim
    was taken back or None), or None when no row is due and free."""
    sql = _claim_sql.get(columns) or _claim_sql.setdefault(columns, _claim_outbox_sql(columns))
    with database.atomic():
        row = database.execute_sql(sql, (node, token, lease, *OUTBOX_ACTIVE, now)).fetchone()
    if row is None:
        return None
    previous, was = row[-2], row[-1]
    return row[:-2], (previous if was is not None else None)


def renew_outbox(token, lease):
    """Extend the leases of the rows this process holds; how many."""
    return database.execute_sql(f'UPDATE "outbox" SET "claimed_until" = {NOW} + ? WHERE "claim_token" = ? '
                                'AND "claimed_until" IS NOT NULL', (lease, token)).rowcount


def release_outbox(entry_id, token):
    """Release the row's claim if this process still holds it (in the transaction recording
    its outcome); False when another took it over meanwhile (the lease ran out)."""
    return database.execute_sql('UPDATE "outbox" SET "claimed_until" = NULL WHERE "id" = ? AND "claim_token" = ?',
                                (entry_id, token)).rowcount == 1


class OutboxClaims:
    """The outbox claims of one delivery process: its token, the lease, and the rows as
    `OutboxEntry` instances (`fields`: the model's fields in the order they are read)."""

    def __init__(self, node, lease, model, fields):
        self.node, self.lease, self.model, self.fields = node, lease, model, fields
        self.columns = tuple(f.column_name for f in fields)
        self.token = new_token(node)

    def next(self, now):
        """(the row due first that nobody holds, now claimed and committed; the node whose
        expired claim it took back, or None), or (None, None) when there is none."""
        claimed = claim_outbox_row(self.columns, self.node, self.token, self.lease, now)
        if claimed is None:
            return None, None
        row, previous = claimed
        return self.model(**{f.name: f.python_value(v) for f, v in zip(self.fields, row)}), previous

    def renew(self):
        return renew_outbox(self.token, self.lease)

    def release(self, entry_id):
        return release_outbox(entry_id, self.token)
