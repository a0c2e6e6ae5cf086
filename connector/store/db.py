"""Open the store: SQLite (WAL, durable commits) or PostgreSQL; schema creation and migrations.

`[connector] database` is a path (SQLite, the default: the spool in its own
file attached as schema `spool`) or a postgresql:// URL (`PostgresURL`: the
spool is the schema `spool` of the same database; psycopg 3 through peewee;
every commit is durable as PostgreSQL's synchronous_commit makes it).

`open_store(path)` binds the models to the file and creates missing tables.
A store written by an older release is upgraded (after a backup) when the
caller allows it (`upgrade`: `[connector] auto_upgrade` for the daemon and its
processes); otherwise `SchemaOutdated` names `connector db upgrade`.
Commits use `synchronous=FULL`, so a commit that returned is on disk: the
intake answers 250 / exit 0 only after one. The files are created 0600 (their
WAL and SHM files follow), the data directory 0700; a file that cannot be
opened raises `StoreUnavailable`, a `ConfigError` naming the path.
"""

import os
import secrets
from pathlib import Path

import peewee

from connector.settings.errors import ConfigError
from connector.settings.values import PostgresURL
from connector.store import dialect, migrations
from connector.store.models import ALL_MODELS, database

# Bytes a WAL file is cut back to when it starts over: after a burst the main file's WAL
# stayed at 200 MB (an outside test); the spool's steady size is about 13 MB.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
PRAGMAS = {
    "journal_mode": "wal",
    "journal_size_limit": WAL_SIZE_LIMIT,
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "cache_size": -16000,
}
SQLITE_HEADER = b"SQLite format 3\0"  # the first bytes of every SQLite file
KEY_FILE = "hmac.key"
SPOOL_TABLE = "SELECT to_regclass('spool.spool')"  # PostgreSQL: not NULL once the store was made
FILE_MODE = 0o600  # database, spool and key hold customer mail or secrets
DIR_MODE = 0o700


class StoreUnavailable(ConfigError):
    """The database cannot be opened: one line naming the file, no traceback."""

    def __init__(self, path, problem):
        super().__init__(path, "[connector] database", f"cannot be opened: {problem}",
                         "the folder must exist and be writable by the daemon's user, and the file be "
                         "the connector's database; `connector check-config` checks both")


class StoreMissing(ConfigError):
    """A command other than an intake found no store: it makes none (a mistyped -c or
    database showed an empty helpdesk and left new files behind, an outside test)."""

    def __init__(self, path):
        super().__init__(path, "[connector] database", "no connector store here",
                         "check -c and [connector] database; `connector run` makes the store when it first starts")


class SpoolMissing(ConfigError):
    """The main file is there and its spool file is not: a new empty spool would number new
    mail from 1 again, ids the main file has already filed, so that mail would never be filed."""

    def __init__(self, path):
        super().__init__(spool_path(path), "[connector] database",
                         f"the spool file is missing beside {path} (it holds every received mail, and a new "
                         "one would reuse ids already filed: new mail would be taken for filed mail)",
                         "restore both files from the same backup; nothing starts on the store until then")


class SchemaOutdated(ConfigError):
    """The store's schema is older than this release's and may not be upgraded here."""

    def __init__(self, path, status):
        pending = status["pending"]
        super().__init__(path, "[connector] auto_upgrade",
                         f"the database schema is at version {status['version']} of {status['latest']} "
                         f"({len(pending)} migration{'s' if len(pending) != 1 else ''} pending: "
                         f"{', '.join(pending)}) and auto_upgrade = no",
                         "run `connector db upgrade` (it backs the file up first), "
                         "or set [connector] auto_upgrade = yes")


def probe(path):
    """Read-only look at an existing database and spool (`check-config`): StoreUnavailable when
    either is not an SQLite file we can read, or the PostgreSQL server cannot be reached or
    refuses us. Writes nothing, creates nothing."""
    if isinstance(path, PostgresURL):
        conn = _pg_connect(path, connect_timeout=5)
        conn.close()
        return
    import sqlite3
    for file in (Path(path), spool_path(path)):
        if not file.exists():
            continue
        try:
            conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                conn.execute("PRAGMA schema_version").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(file, str(exc)) from None


# libpq's words for a server that is away for now (down, restarting, unreachable), not refusing us
UNREACHABLE = ("connection refused", "timeout expired", "could not connect", "is starting up", "shutting down",
               "no such file or directory", "could not translate host name", "server closed the connection",
               "too many clients", "in recovery mode", "network is unreachable", "no route to host")


class PostgresUnavailable(ConfigError):
    """The PostgreSQL server cannot be reached or refuses us: host, port, what failed, a hint.
    `unreachable`: it is away for now (the daemon waits for it), not refusing us."""

    def __init__(self, url, problem):
        from psycopg.conninfo import conninfo_to_dict
        try:
            info = conninfo_to_dict(str(url))
        except Exception:
            info = {}
        where = f"{info.get('host', 'localhost')}:{info.get('port', '5432')}/{info.get('dbname', '')}"
        problem = " ".join(str(problem).split())  # libpq's messages span lines
        self.unreachable = any(words in problem.lower() for words in UNREACHABLE)
        if "does not exist" in problem:
            hint = (f"create it on the server: createuser {info.get('user', 'connector')}; "
                    f"createdb -O {info.get('user', 'connector')} {info.get('dbname', 'connector')}")
        else:
            hint = ("check that the server runs and listens there (pg_isready -h HOST -p PORT), that "
                    "pg_hba.conf lets this host in, and the password (password_file, PGPASSWORD or ~/.pgpass)")
        super().__init__(url.origin, url.key, f"PostgreSQL at {where} as {info.get('user', 'the login user')}: "
                         f"{problem}", hint)


def _password(url):
    if not url.password_file:
        return {}
    try:
        return {"password": Path(url.password_file).read_text(encoding="utf-8").splitlines()[0]}
    except (OSError, IndexError) as exc:
        raise ConfigError(url.password_file, "[connector] password_file", f"cannot be read: {exc}",
                          "put the database password on its first line, readable by the connector only") from None


def _pg_connect(url, **params):
    import psycopg
    try:
        return psycopg.connect(str(url), **_password(url), **params)
    except psycopg.Error as exc:
        raise PostgresUnavailable(url, exc) from None


def exists(path):
    """Whether the store is there: the SQLite main file (without its spool file, or damaged,
    opening it says what is wrong), or the spool's table in the PostgreSQL database (a server
    that cannot be reached counts as there: opening it says what failed)."""
    if not isinstance(path, PostgresURL):
        return Path(path).exists()
    try:
        conn = _pg_connect(path, connect_timeout=5)
    except PostgresUnavailable:
        return True
    try:
        return conn.execute(SPOOL_TABLE).fetchone()[0] is not None
    finally:
        conn.close()


def _pg_spool_exists(db):
    return db.execute_sql(SPOOL_TABLE).fetchone()[0] is not None


def size(path):
    """Bytes the store takes: both SQLite files with their WAL, or the PostgreSQL database (the store is open)."""
    if isinstance(path, PostgresURL):
        return database.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
    files = [f"{file}{suffix}" for file in (path, spool_path(path)) for suffix in ("", "-wal")]
    return sum(os.path.getsize(f) for f in files if os.path.exists(f))


def spool_path(path):
    """The spool's own file, beside the database: connector.db -> connector-spool.db."""
    path = Path(path)
    return path.with_name(f"{path.stem}-spool{path.suffix or '.db'}")


class StoreDatabase(peewee.SqliteDatabase):
    """The main database with the spool file attached as schema `spool`.

    Both files use WAL; the spool always commits with synchronous=FULL (its
    commit is what makes a 250 true), the main file as the process asks.
    """

    def _add_conn_hooks(self, conn):
        super()._add_conn_hooks(conn)
        conn.execute("PRAGMA spool.journal_mode=wal")
        conn.execute("PRAGMA spool.synchronous=full")
        conn.execute(f"PRAGMA spool.journal_size_limit={WAL_SIZE_LIMIT}")


class PostgresDatabase(peewee.PostgresqlDatabase):
    """A PostgreSQL store: the store's SQL (`?` placeholders) made psycopg's by `dialect`.

    Floats are DOUBLE PRECISION (peewee's REAL holds a timestamp to two minutes) and
    integers BIGINT (an IMAP UID or UIDVALIDITY is 32 bits unsigned). A connection the
    server dropped is opened anew at the next statement outside a transaction, so after
    an outage the processes carry on by themselves (as SQLite's do after a full disk).
    Text cannot hold NUL in PostgreSQL: `dialect.register_text_dumpers` writes U+FFFD.
    """

    backend = "postgresql"
    field_types = dict(peewee.PostgresqlDatabase.field_types, FLOAT="DOUBLE PRECISION", INT="BIGINT",
                       AUTO="BIGSERIAL")

    def _connect(self):
        conn = super()._connect()
        dialect.register_text_dumpers(conn)
        return conn

    def execute_sql(self, sql, params=None):
        return super().execute_sql(dialect.placeholders(sql), params)

    def cursor(self, named_cursor=None):
        if not self.in_transaction() and not self.is_closed() and self._state.conn.broken:
            self.close()
        return super().cursor(named_cursor)

    def _close(self, conn):
        try:
            conn.close()
        except Exception:  # a broken connection: nothing to close cleanly
            pass


def _create_private(path):
    """Create `path` empty with mode 0600 unless it exists: SQLite gives its WAL and
    SHM files the database file's mode, so all of them hold customer mail privately."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


def make_database(path, synchronous="full", checkpoint_pages=None):
    if isinstance(path, PostgresURL):
        # Commits are durable (synchronous_commit = on) whatever `synchronous` asks: the
        # worker's relaxed commits are an SQLite economy. Each thread has its connection.
        db = PostgresDatabase(str(path), prefer_psycopg3=True, application_name="connector", **_password(path))
        db.node = path.node  # names this node's wake-up sockets (store.wakeup): nodes on one host keep apart
        return db
    path = Path(path)
    if path.exists() and path.stat().st_size:  # a store: never make anything beside a file that is none
        with open(path, "rb") as file:
            if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise StoreUnavailable(path, "file is not a database")
        if not spool_path(path).exists():
            raise SpoolMissing(path)
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        for name in (path, spool_path(path)):
            _create_private(name)
    except OSError as exc:
        raise StoreUnavailable(path, exc.strerror or str(exc)) from None
    pragmas = dict(PRAGMAS, synchronous=synchronous)
    if checkpoint_pages:
        pragmas["wal_autocheckpoint"] = checkpoint_pages
    db = StoreDatabase(str(path), pragmas=pragmas, timeout=10)
    db.attach(str(spool_path(path)), "spool")
    return db


def _connect(db, path):
    if not isinstance(path, PostgresURL):
        return db.connect(reuse_if_open=True)
    try:
        return db.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        raise PostgresUnavailable(path, exc) from None


def open_store(path, synchronous="full", upgrade=True, checkpoint_pages=None, create=True):
    """Bind the models to the SQLite file at `path`, creating it if needed (with `create`;
    else StoreMissing when the file, or the PostgreSQL database's spool, is not there).
    A main file without its spool file raises SpoolMissing.

    The spool file always commits with `full`. The worker may use `normal`
    for the main file (WAL): what it writes there is derived from spooled
    messages, so a commit lost to a power cut is redone from the spool.
    A new store is made at the latest schema; an older one is backed up and
    upgraded when `upgrade`, else SchemaOutdated is raised and nothing changes.
    `checkpoint_pages` sets how large the WAL may grow before a commit of this
    connection copies it back into the file (SQLite's default: 1000 pages).
    """
    if not create and not isinstance(path, PostgresURL) and not Path(path).exists():
        raise StoreMissing(path)
    db = make_database(path, synchronous, checkpoint_pages)
    database.initialize(db)
    try:
        _connect(db, path)
        if not create and dialect.is_postgres(db) and not _pg_spool_exists(db):
            db.close()
            raise StoreMissing(path)
        status = migrations.status(db)
        if dialect.is_postgres(db) and not status["pending"] and dialect.prepared(db):
            return db  # up to date: no DDL, whose table locks would wait for the writers
        if status["pending"] and db.table_exists("ticket"):
            if not upgrade:
                db.close()
                raise SchemaOutdated(path, status)
            backup(db, path)
        with db.atomic():
            if dialect.is_postgres(db):
                dialect.lock_writes()  # two processes starting at once migrate one after the other
                db.execute_sql('CREATE SCHEMA IF NOT EXISTS "spool"')
            migrations.upgrade(db)  # older files gain their new columns first: create_tables indexes them
            db.create_tables(ALL_MODELS, safe=True)
            dialect.prepare(db)
    except (peewee.OperationalError, peewee.DatabaseError) as exc:
        if isinstance(path, PostgresURL):
            raise PostgresUnavailable(path, exc) from None
        if "locked" in str(exc):
            raise  # busy, not broken: the caller's retry or restart deals with it
        raise StoreUnavailable(path, str(exc)) from None
    return db


def backup(db, path):
    """Copy the main file (SQLite backup API) to `<db>.bak-<version>` before migrating it.
    A PostgreSQL database is the operator's to back up (pg_dump): the migration runs in
    one transaction, so a failed one changes nothing."""
    if isinstance(path, PostgresURL):
        return None
    target = Path(f"{path}.bak-{migrations.status(db)['version']}")
    if target.exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    copy = peewee.SqliteDatabase(str(tmp))
    copy.connect()
    db.connection().backup(copy.connection())
    copy.close()
    os.chmod(tmp, FILE_MODE)
    os.rename(tmp, target)
    return target


def open_without_upgrade(path):
    """The store bound as it is, for `db status`: no table created, no migration run. A file
    that is no SQLite database raises StoreUnavailable (one line), as `open_store` does."""
    db = make_database(path)
    database.initialize(db)
    if isinstance(path, PostgresURL):
        _connect(db, path)
        return db
    try:
        _connect(db, path)
        db.execute_sql("SELECT count(*) FROM sqlite_master")
    except peewee.DatabaseError as exc:
        raise StoreUnavailable(path, str(exc)) from None
    return db


def load_hmac_key(data_dir):
    """The key that signs our outgoing Message-IDs; created on first start."""
    path = Path(data_dir) / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replace a key another process created meanwhile
    except FileExistsError:
        pass
    os.unlink(tmp)
    return path.read_bytes()
