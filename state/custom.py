"""Custom objects: canonical entities declared in crmhub.yaml (`objects:`), one typed table each.

A custom object `subscription` is the table `crm.obj_subscription`: an id, one typed column per
declared field, and the columns every entity has (owner_id, created_at, updated_at, archived_at,
custom, provenance). It joins `ENTITY_TABLES` under its name, so the page writer, ownership,
provenance, the change log, `explain`, merges and migrations treat it as they treat a contact.

Typed columns rather than one JSON blob: a field can be indexed, compared and checksummed as
what it is, and a page is written by the same one-statement-per-table path as the built-in
entities. The tables are outside Alembic (their shape is the config's, not the code's):
`ensure_tables` makes them match it, additively — a new object is created, a new field is
added as a nullable column — and refuses a change that would lose data (a field whose type
changed), naming the field and the fix. A field removed from the config keeps its column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Engine,
    Index,
    MetaData,
    Numeric,
    Table,
    Text,
    func,
    inspect,
    text,
)
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import TypeEngine

from state.schema import CRM, ENTITY_TABLES, TS, Id, _entity_columns

__all__ = ["FIELD_TYPES", "PREFIX", "CustomSchemaError", "ObjectDef", "define", "defined", "ensure_tables", "referrers",
           "table_for"]

#: a custom object's table is `crm.<PREFIX><name>`: no clash with the hub's own tables on SQLite
PREFIX = "obj_"

#: field type (as crmhub.yaml writes it) -> column type
FIELD_TYPES: dict[str, TypeEngine[Any]] = {
    "text": Text(),
    "integer": BigInteger(),
    "decimal": Numeric(20, 6),
    "boolean": Boolean(),
    "date": Date(),
    "timestamp": TS,
}
#: a reference to another entity holds its canonical id
REFERENCE = "reference"

#: the built-in entities: a custom object may not take their names (nor `activity`'s)
BUILT_IN = frozenset({*ENTITY_TABLES, "activity"})


class CustomSchemaError(RuntimeError):
    """The database's custom-object tables cannot be brought to the config without losing data."""


@dataclass(frozen=True)
class ObjectDef:
    """One custom object as the state layer needs it: field -> type (`reference` for an id)."""

    name: str
    #: (field, type): a FIELD_TYPES key, or `reference:<entity>`
    fields: tuple[tuple[str, str], ...]
    #: fields compared case-blind by identity resolution (an expression index serves each)
    match: tuple[str, ...] = ()


def table_for(obj: ObjectDef) -> Table:
    """The object's table, in a metadata of its own (redefining an object replaces nothing else)."""
    md = MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_N_name)s"})
    cols = [Column("id", Id, primary_key=True)]
    for name, kind in obj.fields:
        if kind.startswith(REFERENCE + ":"):
            cols.append(Column(name, Id, index=True, info={"references": kind.split(":", 1)[1]}))
        else:
            cols.append(Column(name, FIELD_TYPES[kind]))
    t = Table(PREFIX + obj.name, md, *cols, *_entity_columns(), schema=CRM)
    for name in obj.match:
        Index(f"ix_{t.name}_{name}_lower", func.lower(t.c[name]))
    return t


_DEFINED: dict[str, Table] = {}


def define(objects: Iterable[ObjectDef]) -> dict[str, Table]:
    """Register the objects' tables as canonical entities (process-wide, as the config is).

    Objects of an earlier config that this one lacks are forgotten: their tables stay in the
    database, untouched, but no sync, rule or command sees them.
    """
    for name in list(_DEFINED):
        ENTITY_TABLES.pop(name, None)
    _DEFINED.clear()
    for obj in objects:
        if obj.name in BUILT_IN:
            raise ValueError(f"{obj.name!r} is a built-in entity")
        _DEFINED[obj.name] = ENTITY_TABLES[obj.name] = table_for(obj)
    return dict(_DEFINED)


def defined() -> Mapping[str, Table]:
    return _DEFINED


def referrers(entity: str) -> list[tuple[Table, str]]:
    """(table, column) of the custom objects whose reference field holds an `entity` id."""
    return [(t, c.name) for t in _DEFINED.values() for c in t.columns if c.info.get("references") == entity]


def _same_type(declared: TypeEngine[Any], found: TypeEngine[Any]) -> bool:
    """Whether a reflected column type holds what the declared one does (dialect spellings vary)."""
    want = getattr(declared, "impl", declared)
    for kind in (Text, BigInteger, Numeric, Boolean, Date):
        if isinstance(want, kind):
            return isinstance(found, kind)
    return True  # timestamps and ids: reflected as DateTime/VARCHAR (or NUMERIC on SQLite), not worth refusing


def ensure_tables(engine: Engine, tables: Mapping[str, Table] | None = None) -> list[str]:
    """Create missing custom-object tables and add missing columns; return what was done.

    One transaction; on PostgreSQL an advisory lock keeps two workers from racing.
    """
    tables = _DEFINED if tables is None else tables
    if not tables:
        return []
    done: list[str] = []
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if not sqlite:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CRM}"))
            conn.execute(text("SELECT pg_advisory_xact_lock(4851051242352947)"))
        schema = None if sqlite else CRM
        insp = inspect(conn)
        existing = set(insp.get_table_names(schema=schema))
        for name, t in tables.items():
            if t.name not in existing:
                conn.execute(CreateTable(t))
                for ix in t.indexes:
                    conn.execute(CreateIndex(ix))
                done.append(f"created {CRM}.{t.name} for object {name}")
                continue
            found = {c["name"]: c["type"] for c in insp.get_columns(t.name, schema=schema)}
            for col in t.columns:
                if col.name not in found:
                    kind = col.type.compile(dialect=conn.dialect)
                    qual = t.name if sqlite else f"{CRM}.{t.name}"
                    conn.execute(text(f"ALTER TABLE {qual} ADD COLUMN {col.name} {kind}"))
                    done.append(f"added {name}.{col.name} ({kind})")
                elif not _same_type(col.type, found[col.name]):
                    raise CustomSchemaError(
                        f"objects.{name}.fields.{col.name}: the database holds this field as {found[col.name]}, "
                        f"the config declares {col.type.compile(dialect=conn.dialect)}. Fix: keep the old type, "
                        f"or declare a new field under another name and map it (the old column keeps its data)")
            for ix in t.indexes:  # a new reference or match key (not reflected: SQLite skips expression indexes)
                conn.execute(CreateIndex(ix, if_not_exists=True))
    return done
