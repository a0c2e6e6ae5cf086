"""The leases' SQL (`connector.store.leases`) on real stores, and `[node] failover_seconds`:
on PostgreSQL a lease held is refused to another holder until it expires or is released,
and a renewal by a holder it was taken from fails (the keeper then stops the work); on
SQLite (one node) taking a lease always works, so a daemon restarted after kill -9 scans
at once. A `LeaseKeeper` fences its work when it cannot renew."""

import time

import pytest

from conftest import Instance


def open_store(url_or_path):
    from connector.settings.values import PostgresURL
    from connector.store.db import open_store
    return open_store(PostgresURL.of(str(url_or_path)) or url_or_path)


def test_postgresql_lease_is_exclusive_until_released_or_expired(pg_url):
    from connector.store import leases
    open_store(pg_url)
    assert leases.acquire("scanner:support", "mx1", 11, "token-a", 30) == (True, None)
    assert leases.acquire("scanner:support", "mx2", 22, "token-b", 30) == (False, "mx1 11")
    assert leases.acquire("scanner:support", "mx1", 11, "token-a", 30)[0]  # ours: taken again
    assert leases.renew("scanner:support", "token-a", 30) and not leases.renew("scanner:support", "token-b", 30)
    assert [(lease.name, lease.node) for lease in leases.held()] == [("scanner:support", "mx1")]
    assert leases.release("scanner:support", "token-a")
    assert leases.held() == []
    assert leases.acquire("scanner:support", "mx2", 22, "token-b", 0.5) == (True, "mx1 11")
    assert not leases.renew("scanner:support", "token-a", 30)  # taken from mx1: its renewal fails
    time.sleep(0.6)  # mx2's lease of 0.5 s has expired: mx1 may take it
    assert leases.acquire("scanner:support", "mx1", 11, "token-a", 30) == (True, "mx2 22")
    assert [lease.node for lease in leases.held("mx1")] == ["mx1"] and leases.held("mx2") == []


def test_sqlite_lease_is_always_taken(tmp_path):
    from connector.store import leases
    open_store(tmp_path / "connector.db")
    assert leases.acquire("deadlines", "box", 11, "token-a", 30)[0]
    assert leases.acquire("deadlines", "box", 22, "token-b", 30) == (True, "box 11")  # a restarted daemon
    assert not leases.renew("deadlines", "token-a", 30)
    assert [(lease.name, lease.pid) for lease in leases.held("box")] == [("deadlines", 22)]


def test_keeper_stops_the_work_when_it_cannot_renew(pg_url, postgres_server):
    """The database away: the holder's `holds` turns false by itself (the fence), before the
    lease could have expired; once the database is back it takes the lease again."""
    from connector.singletons import LeaseKeeper
    open_store(pg_url)
    now = [0.0]
    keeper = LeaseKeeper("mx1", 3, clock=lambda: now[0])
    keeper.want(["retention"])
    keeper.tick()
    assert keeper.holds("retention")
    now[0] = 1.4
    assert keeper.holds("retention")  # fence: 1.5 s after the renewal began
    name = pg_url.rsplit("/", 1)[1]
    postgres_server.sql(f"ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")
    postgres_server.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        keeper.tick()  # the renewal fails: still held until the fence
        assert keeper.holds("retention")
        now[0] = 1.6
        assert not keeper.holds("retention")
    finally:
        postgres_server.sql(f"ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")
    keeper.tick()  # the fence had passed: lost, then taken again (nobody else took it)
    assert keeper.holds("retention")


@pytest.mark.parametrize("value, problem", [("0", "must be more than 0"), ("soon", "is not a number of seconds")])
def test_failover_seconds_must_be_positive(tmp_path, sink, value, problem):
    inst = Instance(tmp_path, sink.port, node__failover_seconds=value)
    result = inst.cli("check-config", check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "[node] failover_seconds" in err and problem in err, err


def test_a_store_from_before_the_leases_gains_the_table(tmp_path):
    """A store as the previous release left it (no `lease` table, 0013_leases not recorded) opens,
    is upgraded, and its leases work."""
    import sqlite3
    from connector.store import leases
    from connector.store.models import database
    path = tmp_path / "connector.db"
    open_store(path)
    database.close()
    with sqlite3.connect(path) as conn:
        conn.execute('DROP TABLE "lease"')
        conn.execute("DELETE FROM schema_migration WHERE name = '0013_leases'")
    open_store(path)
    assert leases.acquire("retention", "box", 1, "token", 30)[0]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM schema_migration WHERE name = '0013_leases'").fetchone()
