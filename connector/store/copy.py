"""`connector db copy --to postgresql://...`: an SQLite store moved into an empty
PostgreSQL database, and checked.

Every table of the models (spool, processing, tickets, messages, outbox, triage,
events, blocks, scanner state, ...) and the applied migrations are copied in
primary-key order from one read transaction of the SQLite files (a consistent
snapshot), BATCH rows per statement; the target is made at the latest schema
first and must hold no row. Afterwards each table is read back from PostgreSQL
and compared with the source: the row count and a SHA-256 over every row's
values in key order (booleans, numbers, text and bytes each in one canonical
form), so a row changed, lost or doubled on the way is found. The id sequences
continue after the highest id copied; the ticket number sequence after the
highest ticket number.
"""

import hashlib
import json
import sqlite3

import peewee

from connector.store import dialect, migrations
from connector.store.db import open_store, spool_path
from connector.store.models import ALL_MODELS, database

BATCH = 500


class TargetNotEmpty(Exception):
    """The PostgreSQL database already holds rows: copying would mix two stores."""


def _tables():
    """(qualified name for SQL, name in the report, model or None, key column) of every table."""
    tables = []
    for model in ALL_MODELS:
        meta = model._meta
        name = f'"{meta.schema}"."{meta.table_name}"' if meta.schema else f'"{meta.table_name}"'
        tables.append((name, f"{meta.schema}.{meta.table_name}" if meta.schema else meta.table_name, model,
                       meta.primary_key.column_name))
    tables.append((f'"{migrations.TABLE}"', migrations.TABLE, None, "name"))
    return tables


def _columns(model, source, table_name):
    if model is None:
        return ["name", "applied_at"]
    present = {row[1] for row in source.execute(f'PRAGMA {_pragma_prefix(model)}table_info("{table_name}")')}
    return [f.column_name for f in model._meta.sorted_fields if f.column_name in present]


def _pragma_prefix(model):
    return f'"{model._meta.schema}".' if model is not None and model._meta.schema else ""


def _integer_key(model):
    """Whether the table's key is an integer (ordered alike by both databases; a text key may
    be collated differently, so its rows are compared sorted here)."""
    return model is not None and isinstance(model._meta.primary_key, peewee.IntegerField)


def _booleans(model):
    if model is None:
        return set()
    return {f.column_name for f in model._meta.sorted_fields if isinstance(f, peewee.BooleanField)}


def _canonical(value):
    """One form per value on both sides: SQLite's 0/1 and PostgreSQL's booleans are ints,
    memoryview is bytes, floats by repr."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, str) and dialect.NUL in value:  # PostgreSQL text holds U+FFFD for it
        return value.replace(dialect.NUL, dialect.NUL_STAND_IN)
    return value


def _digest(rows, by_value=False):
    """(count, SHA-256) of the rows; `by_value` sorts them here first (a text key: the two
    databases may collate it differently)."""
    hasher, count = hashlib.sha256(), 0
    rows = ([_canonical(v) for v in row] for row in rows)
    for row in (sorted(rows, key=json.dumps) if by_value else rows):
        hasher.update(json.dumps(row, ensure_ascii=False).encode())
        hasher.update(b"\n")
        count += 1
    return count, hasher.hexdigest()


def _source(path):
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.execute(f"ATTACH DATABASE '{spool_path(path).resolve().as_uri()}?mode=ro' AS spool")
    conn.execute("BEGIN")  # one snapshot of both files for the copy and the check
    return conn


def copy(source_path, target_url, progress=lambda table, rows: None):
    """Copy the SQLite store at `source_path` into the empty PostgreSQL database `target_url`;
    returns {"tables": {table: {"rows", "sha256", "verified"}}, "verified": bool}."""
    source = _source(source_path)
    target = open_store(target_url)  # made at the latest schema; binds the models to it
    tables = _tables()
    for name, _, _, _ in tables[:-1]:
        if target.execute_sql(f"SELECT 1 FROM {name} LIMIT 1").fetchone():
            raise TargetNotEmpty(f"{name} already has rows")
    report = {}
    with database.atomic():
        target.execute_sql(f'DELETE FROM "{migrations.TABLE}"')  # the source's list, not a new store's
        for name, label, model, key in tables:
            columns = _columns(model, source, label.rpartition(".")[2])
            booleans = _booleans(model)
            listed = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" * len(columns))
            rows = source.execute(f"SELECT {listed} FROM {name} ORDER BY \"{key}\"")
            while True:
                batch = rows.fetchmany(BATCH)
                if not batch:
                    break
                batch = [tuple(bool(v) if c in booleans and v is not None else v for c, v in zip(columns, row))
                         for row in batch]
                target.cursor().executemany(dialect.placeholders(f"INSERT INTO {name} ({listed}) VALUES ({marks})"),
                                            batch)
                progress(label, len(batch))
            if model is not None and key == "id":
                target.execute_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                   f"COALESCE((SELECT MAX(\"id\") FROM {name}), 0) + 1, false)")
            report[label] = {"columns": columns, "key": key, "name": name, "by_value": not _integer_key(model)}
    dialect.prepare(target)
    verified = True
    for label, entry in report.items():
        listed = ", ".join(f'"{c}"' for c in entry["columns"])
        order = f' ORDER BY "{entry["key"]}"'
        by_value = entry["by_value"]
        source_count, source_sum = _digest(source.execute(f"SELECT {listed} FROM {entry['name']}{order}"), by_value)
        target_count, target_sum = _digest(target.execute_sql(f"SELECT {listed} FROM {entry['name']}{order}"),
                                           by_value)
        same = (source_count, source_sum) == (target_count, target_sum)
        verified &= same
        report[label] = {"rows": target_count, "source_rows": source_count, "sha256": target_sum,
                         "verified": same}
    source.close()
    return {"tables": report, "verified": verified}
