"""Plain UPDATE statements for the runner's per-step bookkeeping.

Every step of every run goes through a handful of single-table UPDATEs with equality filters. Building them
through the ORM's query compiler costs about half a millisecond of CPU each, more than the database takes to
run them; here the statement text is built once per shape and only the values are adapted per call, by the
same field methods the ORM uses (``get_db_prep_save`` / ``get_db_prep_value``), so JSON, datetimes, UUIDs
and foreign keys are stored exactly as the ORM would store them, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Field, Model

DATABASE = "default"


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` of ``model``; a reverse relation has no column to update or filter on."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field), f"{model.__name__}.{name} is not a concrete field"
    return field


def _column(model: type[Model], name: str) -> str:
    column = _field(model, name).column
    assert column is not None, f"{model.__name__}.{name} has no column"
    return column


@cache
def _statement(model: type[Model], vendor: str, columns: tuple[str, ...], filters: tuple[tuple[str, bool], ...]) -> str:
    ops = connections[DATABASE].ops
    sets = ", ".join(f"{ops.quote_name(_column(model, name))} = %s" for name in columns)
    where = " AND ".join(
        f"{ops.quote_name(_column(model, name))} {'IS NULL' if is_null else '= %s'}" for name, is_null in filters
    )
    # Identifiers come from the model's metadata, quoted; every value is a parameter.
    return f"UPDATE {ops.quote_name(model._meta.db_table)} SET {sets} WHERE {where}"  # noqa: S608


def update(model: type[Model], where: dict[str, Any], **values: Any) -> int:
    """``model.objects.filter(**where).update(**values)`` for equality filters and plain values; returns rows.

    A ``None`` in ``where`` means IS NULL. Expressions (F(), Case...) are not supported: use the ORM there.
    """
    connection = connections[DATABASE]
    sql = _statement(model, connection.vendor, tuple(values), tuple((k, v is None) for k, v in where.items()))
    params = [_field(model, name).get_db_prep_save(value, connection) for name, value in values.items()]
    params += [_field(model, name).get_db_prep_value(v, connection) for name, v in where.items() if v is not None]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def select(model: type[Model], columns: tuple[str, ...], where: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``model.objects.filter(**where).values_list(*columns)`` for equality filters on concrete columns."""
    connection = connections[DATABASE]
    q = connection.ops.quote_name
    names = ", ".join(q(_column(model, name)) for name in columns)
    condition = " AND ".join(f"{q(_column(model, name))} = %s" for name in where)
    # Identifiers come from the model's metadata, quoted; every value is a parameter.
    sql = f"SELECT {names} FROM {q(model._meta.db_table)} WHERE {condition}"  # noqa: S608
    params = [_field(model, name).get_db_prep_value(value, connection) for name, value in where.items()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()]
