"""Inserts and updates on the hot paths, with their SQL built once.

peewee compiles a query's SQL text anew on every call (~0.1 ms each), which
dominated the cost of filing a message. These helpers build the statement
once per model and column set, convert values through the peewee fields (so
the models stay the one description of the schema), and run it directly.
"""

from connector.store import dialect
from connector.store.models import database

_SQL = {}


def _statement(kind, model, columns, condition=None):
    key = (kind, model, columns, condition, dialect.is_postgres())
    sql = _SQL.get(key)
    if sql is None:
        table = model._meta.table_name
        if model._meta.schema:
            table = f'{model._meta.schema}"."{table}'
        names = ['"%s"' % model._meta.fields[c].column_name for c in columns]
        if kind != "update":
            verb = "ignore" if kind == "ignore_returning" else kind  # insert() wants the id of a row it added
            primary = '"%s"' % model._meta.primary_key.column_name
            sql = (f'{dialect.insert_verb(verb)} INTO "{table}" ({", ".join(names)}) '
                   f'VALUES ({", ".join("?" * len(names))}){dialect.on_conflict(verb, primary, names)}')
            if kind in ("insert", "ignore_returning") and dialect.is_postgres():
                sql += f" RETURNING {primary}"  # psycopg has no lastrowid
        else:
            sets = ", ".join(f"{n} = ?" for n in names)
            sql = f'UPDATE "{table}" SET {sets} WHERE "{model._meta.primary_key.column_name}" = ?'
            if condition:
                column, count = condition
                sql += f' AND "{model._meta.fields[column].column_name}" IN ({", ".join("?" * count)})'
        _SQL[key] = sql
    return sql


_CONVERTERS = {}


def _values(model, columns, row):
    key = (model, columns)
    converters = _CONVERTERS.get(key)
    if converters is None:
        converters = _CONVERTERS[key] = [(c, model._meta.fields[c].db_value) for c in columns]
    return [convert(row[c]) for c, convert in converters]


_MISSING = {}


def _with_defaults(model, row):
    """`row` plus the model's Python-side defaults for the columns it leaves out."""
    key = (model, tuple(row))
    missing = _MISSING.get(key)
    if missing is None:
        missing = _MISSING[key] = [f for f in model._meta.sorted_fields if f.name not in row
                                   and f is not model._meta.primary_key and f.default is not None]
    if not missing:
        return row
    row = dict(row)
    for field in missing:
        row[field.name] = field.default() if callable(field.default) else field.default
    return row


def insert(model, or_ignore=False, **row):
    """Insert one row; returns its id (None: `or_ignore` and a unique key had it already)."""
    row = _with_defaults(model, row)
    columns = tuple(row)
    cursor = database.execute_sql(_statement("ignore_returning" if or_ignore else "insert", model, columns),
                                  _values(model, columns, row))
    if dialect.is_postgres():
        returned = cursor.fetchone()
        return returned[0] if returned else None
    return cursor.lastrowid if cursor.rowcount else None


def insert_many(model, rows, or_ignore=False, or_replace=False):
    """Insert rows that all have the same columns; on a conflict skip (`or_ignore`) or replace the old row."""
    if not rows:
        return
    rows = [_with_defaults(model, row) for row in rows]
    columns = tuple(rows[0])
    kind = "ignore" if or_ignore else "replace" if or_replace else "insert"
    sql = _statement(kind, model, columns)
    database.cursor().executemany(dialect.placeholders(sql) if dialect.is_postgres() else sql,
                                  [_values(model, columns, row) for row in rows])


def update(model, pk, only_if=None, **fields):
    """Set `fields` on the row whose primary key is `pk` (and, with `only_if=(column, values)`,
    whose `column` is one of `values`); returns how many rows changed."""
    columns = tuple(fields)
    condition = (only_if[0], len(only_if[1])) if only_if else None
    params = _values(model, columns, fields) + [pk] + (list(only_if[1]) if only_if else [])
    return database.execute_sql(_statement("update", model, columns, condition), params).rowcount
