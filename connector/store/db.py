"""Open the SQLite store: WAL, durable commits, schema creation and migrations.

`open_store(path)` binds the models to the file and creates missing tables.
Commits use `synchronous=FULL`, so a commit that returned is on disk: the
intake answers 250 / exit 0 only after one.
"""

import os
import secrets
from pathlib import Path

import peewee

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


def make_database(path, synchronous="full"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = StoreDatabase(str(path), pragmas=dict(PRAGMAS, synchronous=synchronous), timeout=10)
    db.attach(str(spool_path(path)), "spool")
    return db


def open_store(path, synchronous="full"):
    """Bind the models to the SQLite file at `path`, creating it if needed.

    The spool file always commits with `full`. The worker may use `normal`
    for the main file (WAL): what it writes there is derived from spooled
    messages, so a commit lost to a power cut is redone from the spool.
    """
    db = make_database(path, synchronous)
    database.initialize(db)
    db.connect(reuse_if_open=True)
    if migrations.status(db)["pending"] and db.table_exists("ticket"):
        backup(db, path)
    with db.atomic():
        migrations.upgrade(db)  # older files gain their new columns first: create_tables indexes them
        db.create_tables(ALL_MODELS, safe=True)
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
    os.chmod(tmp, 0o600)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
