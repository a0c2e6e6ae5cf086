"""Open the SQLite store: WAL, durable commits, schema creation and migrations.

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
from connector.store import migrations
from connector.store.models import ALL_MODELS, database

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "cache_size": -16000,
}
KEY_FILE = "hmac.key"
FILE_MODE = 0o600  # database, spool and key hold customer mail or secrets
DIR_MODE = 0o700


class StoreUnavailable(ConfigError):
    """The database cannot be opened: one line naming the file, no traceback."""

    def __init__(self, path, problem):
        super().__init__(path, "[connector] database", f"cannot be opened: {problem}",
                         "the folder must exist and be writable by the daemon's user, and the file be "
                         "the connector's database; `connector check-config` checks both")


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
    either is not an SQLite file we can read. Writes nothing, creates nothing."""
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


def _create_private(path):
    """Create `path` empty with mode 0600 unless it exists: SQLite gives its WAL and
    SHM files the database file's mode, so all of them hold customer mail privately."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass


def make_database(path, synchronous="full", checkpoint_pages=None):
    path = Path(path)
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


def open_store(path, synchronous="full", upgrade=True, checkpoint_pages=None):
    """Bind the models to the SQLite file at `path`, creating it if needed.

    The spool file always commits with `full`. The worker may use `normal`
    for the main file (WAL): what it writes there is derived from spooled
    messages, so a commit lost to a power cut is redone from the spool.
    A new store is made at the latest schema; an older one is backed up and
    upgraded when `upgrade`, else SchemaOutdated is raised and nothing changes.
    `checkpoint_pages` sets how large the WAL may grow before a commit of this
    connection copies it back into the file (SQLite's default: 1000 pages).
    """
    db = make_database(path, synchronous, checkpoint_pages)
    database.initialize(db)
    try:
        db.connect(reuse_if_open=True)
        status = migrations.status(db)
        if status["pending"] and db.table_exists("ticket"):
            if not upgrade:
                db.close()
                raise SchemaOutdated(path, status)
            backup(db, path)
        with db.atomic():
            migrations.upgrade(db)  # older files gain their new columns first: create_tables indexes them
            db.create_tables(ALL_MODELS, safe=True)
    except (peewee.OperationalError, peewee.DatabaseError) as exc:
        if "locked" in str(exc):
            raise  # busy, not broken: the caller's retry or restart deals with it
        raise StoreUnavailable(path, str(exc)) from None
    return db


def backup(db, path):
    """Copy the main file (SQLite backup API) to `<db>.bak-<version>` before migrating it."""
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
    """The store bound as it is, for `db status`: no table created, no migration run."""
    db = make_database(path)
    database.initialize(db)
    db.connect(reuse_if_open=True)
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
