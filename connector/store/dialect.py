"""The few places where SQLite and PostgreSQL spell SQL differently, in one module.

The store's raw SQL (see `bulk` for why there is raw SQL at all) is written
once, with `?` placeholders and portable SQL; `PostgresDatabase.execute_sql`
turns `?` into psycopg's `%s`. What cannot be written portably goes through
a function here, so no query exists in two copies:

    insert_verb / on_conflict   INSERT OR IGNORE | OR REPLACE  vs  ON CONFLICT ...
    lock_writes                 a no-op UPDATE taking SQLite's write lock  vs  an advisory lock
    unindexed                   SQLite's `+col` (do not use this column's index)  vs  `col`
    greatest                    SQLite's two-argument MAX  vs  GREATEST
    checkpoint, vacuum          WAL housekeeping  vs  nothing / VACUUM
    next_ticket_number          MAX + 1  vs  a sequence (both checked again under the write lock)
    register_text_dumpers       text holds NUL  vs  it cannot: U+FFFD instead (the raw bytes keep it)
    clock                       the database server's time, in epoch seconds (leases)

The database in use is asked with `is_postgres()`; both database classes
live in `connector.store.db`.
"""

import functools

from connector.store.models import database

TICKET_SEQUENCE = "ticket_number_seq"
WRITE_LOCK = 0x636F6E6E  # 'conn': the advisory lock every writing transaction takes on PostgreSQL


def is_postgres(db=None):
    """Whether the store is bound to PostgreSQL (the default: SQLite)."""
    db = db or database.obj
    return getattr(db, "backend", "sqlite") == "postgresql"


NUL, NUL_STAND_IN = "\x00", "\ufffd"  # PostgreSQL text refuses NUL; SQLite keeps it


def register_text_dumpers(conn):
    """Make a psycopg connection write U+FFFD for NUL in text (a mail's text or header may
    hold one, raw or as `=00`): PostgreSQL refuses NUL in text, which would shunt the mail.
    The spool's raw bytes (bytea) keep the original."""
    from psycopg.types.string import StrBinaryDumper, StrDumperUnknown  # the Python ones: the C ones take no subclass

    class NulFreeText(StrDumperUnknown):
        def dump(self, obj):
            return super().dump(obj.replace(NUL, NUL_STAND_IN) if NUL in obj else obj)

    class NulFreeBinary(StrBinaryDumper):
        def dump(self, obj):
            return super().dump(obj.replace(NUL, NUL_STAND_IN) if NUL in obj else obj)

    conn.adapters.register_dumper(str, NulFreeBinary)
    conn.adapters.register_dumper(str, NulFreeText)  # the last one registered serves AUTO: text, as psycopg's own


@functools.lru_cache(maxsize=2048)
def placeholders(sql):
    """The store's `?` -> psycopg's `%s` (and a literal `%` -> `%%`). Only SQL with a `?` is
    changed: peewee's own already uses `%s`, and the store's has no `?` inside a string."""
    return sql.replace("%", "%%").replace("?", "%s") if "?" in sql else sql


def insert_verb(kind):
    """The start of an INSERT that skips (`ignore`) or replaces (`replace`) a conflicting row."""
    if is_postgres() or kind == "insert":
        return "INSERT"
    return {"ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[kind]


def on_conflict(kind, key, columns):
    """The clause that ends such an INSERT on PostgreSQL ('' on SQLite): `key` is the
    conflicting column (the primary key), `columns` those a replace writes."""
    if not is_postgres() or kind == "insert":
        return ""
    if kind == "ignore":
        return " ON CONFLICT DO NOTHING"
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    return f" ON CONFLICT ({key}) DO UPDATE SET {sets}"


def lock_writes():
    """Serialise this transaction with every other writer, from its first statement: SQLite
    takes its (main file's) write lock with a write that changes nothing; PostgreSQL, whose
    locks are per row, takes one advisory lock that every such transaction takes."""
    if is_postgres():
        database.execute_sql("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
    else:
        database.execute_sql('UPDATE "ticket" SET "id" = "id" WHERE 1 = 0')


def unindexed(column):
    """`column`, telling SQLite's planner not to use its index (`+column`); PostgreSQL plans alone."""
    return column if is_postgres() else f"+{column}"


def greatest(a, b):
    import peewee
    return peewee.fn.GREATEST(a, b) if is_postgres() else peewee.fn.MAX(a, b)


def clock():
    """SQL for the database's own time in epoch seconds (the leases' clock: nodes' clocks
    differ, the server's is one): PostgreSQL's clock_timestamp(), SQLite's julianday."""
    if is_postgres():
        return "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"
    return "((julianday('now') - 2440587.5) * 86400.0)"


def now():
    """The database's time in epoch seconds (see `clock`)."""
    return database.execute_sql(f"SELECT {clock()}").fetchone()[0]


def checkpoint_spool():
    """Copy the spool's WAL back into its file (SQLite); PostgreSQL checkpoints by itself."""
    if not is_postgres():
        database.execute_sql("PRAGMA spool.wal_checkpoint(PASSIVE)")


def no_autocheckpoint():
    """This connection's commits never checkpoint (SQLite); nothing to do on PostgreSQL."""
    if not is_postgres():
        database.execute_sql("PRAGMA wal_autocheckpoint = 0")


def vacuum():
    """Give the free pages back (SQLite rewrites both files; PostgreSQL: VACUUM, outside a transaction)."""
    if is_postgres():
        database.execute_sql("VACUUM")
    else:  # in WAL mode the rewritten file is in the WAL until a checkpoint: truncate it, so the files shrink now
        for schema in ("main", '"spool"'):
            database.execute_sql(f"VACUUM {schema}")
            database.execute_sql(f"PRAGMA {schema}.wal_checkpoint(TRUNCATE)")


def next_ticket_number():
    """The number a new ticket is planned with (checked again under the write lock by
    `ticket_number_free`): SQLite's MAX + 1; on PostgreSQL the next value of the ticket
    sequence, read without taking it, so a dry run or a plan that is not filed uses none."""
    if is_postgres():
        return database.execute_sql(_PEEK).fetchone()[0]
    row = database.execute_sql('SELECT MAX("number") FROM "ticket"').fetchone()
    return (row[0] or 0) + 1


def ticket_number_free(number):
    """Whether a planned ticket number is still the next one, asked under the write lock."""
    return next_ticket_number() == number


_PEEK = f"SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END FROM {TICKET_SEQUENCE}"


def prepare(db):
    """What a PostgreSQL store needs beyond the models' tables: the ticket sequence, kept at
    the highest number given by a trigger on every ticket inserted (whoever inserts it: the
    pipeline, or a store copied in). Writers take turns (`lock_writes`), so the number read
    under the lock is the one filed; a filing rolled back after its insert leaves a gap."""
    if not is_postgres(db):
        return
    db.execute_sql(f"CREATE SEQUENCE IF NOT EXISTS {TICKET_SEQUENCE}")
    db.execute_sql(f"""CREATE OR REPLACE FUNCTION ticket_number_given() RETURNS trigger AS $$
BEGIN
  IF NEW.number >= ({_PEEK}) THEN
    PERFORM setval('{TICKET_SEQUENCE}', NEW.number, true);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql""")
    db.execute_sql('DROP TRIGGER IF EXISTS ticket_number_given ON "ticket"')
    db.execute_sql('CREATE TRIGGER ticket_number_given AFTER INSERT ON "ticket" FOR EACH ROW '
                   'EXECUTE FUNCTION ticket_number_given()')
    db.execute_sql(f"SELECT setval('{TICKET_SEQUENCE}', t.top) FROM (SELECT MAX(\"number\") AS top FROM \"ticket\") t "
                   f"WHERE t.top >= ({_PEEK})")


def prepared(db):
    """Whether a PostgreSQL store was made whole by `prepare` (its trigger is made last)."""
    return db.execute_sql("SELECT 1 FROM pg_trigger WHERE tgname = 'ticket_number_given'").fetchone() is not None


def columns(db, table, schema=None):
    """The column names of `table` (empty when it does not exist)."""
    if is_postgres(db):
        rows = db.execute_sql("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                              "AND table_schema = COALESCE(?, current_schema())", (table, schema)).fetchall()
        return {row[0] for row in rows}
    prefix = f'"{schema}".' if schema else ""
    return {row[1] for row in db.execute_sql(f'PRAGMA {prefix}table_info("{table}")').fetchall()}


def column_type(db, definition):
    """A column definition of a migration in this backend's words: REAL is 4 bytes on
    PostgreSQL, too few for a timestamp, and SQLite's BLOB is BYTEA."""
    if not is_postgres(db):
        return definition
    return {"REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"}.get(definition, definition)
