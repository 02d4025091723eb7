"""One statement per table per page.

PostgreSQL: `INSERT .. SELECT * FROM unnest(col1[], col2[], ..)` with one array
parameter per column. The SQL text is the same for every page, so psycopg prepares it
once; a page of any size costs one round trip and no per-row SQL parsing. (A multi-row
VALUES list with one parameter per cell was measured several times slower: psycopg
re-parses a new, long statement every page.)

SQLite: the driver's executemany, a C loop over one prepared statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Column, Connection, String, Table
from sqlalchemy.dialects import postgresql

_PG = postgresql.dialect()


def _pg_type(col: Column[Any]) -> str:
    t = col.type
    impl = getattr(t, "impl", None)
    if impl is not None and not isinstance(t, postgresql.JSONB):
        t = impl
    if hasattr(t, "_variant_mapping") and "postgresql" in t._variant_mapping:
        t = t._variant_mapping["postgresql"]
    # VARCHAR(n) without its length: an explicit cast to varchar(n) truncates silently, whereas
    # storing into the varchar(n) column refuses a longer value ("value too long")
    return str(t.compile(dialect=_PG)).partition("(")[0] if isinstance(t, String) else str(t.compile(dialect=_PG))


@cache
def _pg_sql(table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] | None,
            update: tuple[str, ...] | None) -> tuple[str, tuple[bool, ...]]:
    cols = [table.c[c] for c in columns]
    types = [_pg_type(c) for c in cols]
    is_json = tuple(t in ("JSONB", "JSON") for t in types)
    args = ", ".join(f"%b::{'text' if j else t}[]" for t, j in zip(types, is_json, strict=True))
    select_list = ", ".join(f"u.c{i}::{t.lower()}" if j else f"u.c{i}"
                            for i, (t, j) in enumerate(zip(types, is_json, strict=True)))
    alias = ", ".join(f"c{i}" for i in range(len(cols)))
    sql = (f"INSERT INTO {table.schema}.{table.name} ({', '.join(columns)}) "
           f"SELECT {select_list} FROM unnest({args}) AS u({alias})")
    if conflict is not None:
        target = f" ON CONFLICT ({', '.join(conflict)})"
        if update:
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
            sql += f"{target} DO UPDATE SET {sets}"
        else:
            sql += f"{target} DO NOTHING"
    return sql, is_json


def _json_text(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v, default=str).decode()


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *,
                conflict: Sequence[str] | None = None, update: Sequence[str] | None = None) -> None:
    """Insert `rows` (dicts with the same keys) in one statement.

    conflict: the unique columns of ON CONFLICT; with `update`, the columns to overwrite
    from the incoming row, else DO NOTHING.
    """
    if not rows:
        return
    columns = tuple(rows[0].keys())
    if conn.dialect.name == "postgresql":
        sql, is_json = _pg_sql(table, columns, tuple(conflict) if conflict is not None else None,
                               tuple(update) if update else None)
        conn.exec_driver_sql(sql, _pg_params(rows, columns, is_json))
        return
    sql, processors = _sqlite_sql(conn.dialect, table, columns, tuple(conflict) if conflict is not None else None,
                                  tuple(update) if update else None)
    params = [tuple(p(r[c]) if p else r[c] for c, p in zip(columns, processors, strict=True)) for r in rows]
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.executemany(sql, params)


@cache
def _sqlite_sql(dialect: Any, table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] | None,
                update: tuple[str, ...] | None) -> tuple[str, tuple[Any, ...]]:
    """The driver's executemany with SQLAlchemy's own value conversions (so rows read back
    through SQLAlchemy as they would after a Core insert), without its per-row overhead."""
    processors = tuple(table.c[c].type._cached_bind_processor(dialect) for c in columns)
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    if conflict is not None:
        target = f" ON CONFLICT ({', '.join(conflict)})"
        if update:
            sql += f"{target} DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)
        else:
            sql += f"{target} DO NOTHING"
    return sql, processors


class Batch:
    """Writes whose answers nobody waits for, sent together.

    On PostgreSQL they go in one psycopg pipeline: one round trip for the whole page instead
    of one per statement (a page's cost was mostly round trips on a busy two-core machine).
    `send()` puts what is queued on the wire without waiting (the server works while the
    caller goes on), `flush()` waits for everything sent. On SQLite, which has no round
    trips, each runs at once.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.ops: list[tuple[str, tuple[Any, ...] | dict[str, Any]]] = []
        #: the open pipeline of `send()`, and its cursor
        self._pipe: Any = None
        self._cur: Any = None

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any]], *,
                    conflict: Sequence[str] | None = None, update: Sequence[str] | None = None) -> None:
        if not rows:
            return
        if not self.pg:
            insert_rows(self.conn, table, rows, conflict=conflict, update=update)
            return
        columns = tuple(rows[0].keys())
        sql, is_json = _pg_sql(table, columns, tuple(conflict) if conflict is not None else None,
                               tuple(update) if update else None)
        self.ops.append((sql, _pg_params(rows, columns, is_json)))

    def sql(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        """A PostgreSQL statement for the pipeline (callers give SQLite its own path)."""
        assert self.pg, "Batch.sql is for PostgreSQL"
        self.ops.append((sql, params))

    def send(self) -> None:
        """Send the queued writes without waiting for them: the server executes them while the
        caller goes on (merging the rest of a page). `flush()` waits for them all; so does any
        read on this connection meanwhile. A failure surfaces there, and the transaction with it."""
        if not self.ops:
            return
        ops, self.ops = self.ops, []
        if self._pipe is None:
            raw = self.conn.connection.driver_connection
            assert raw is not None
            self._pipe = raw.pipeline()
            self._pipe.__enter__()
            self._cur = raw.cursor()
        for sql, params in ops:
            self._cur.execute(sql, params)  # may raise an earlier write's error

    def flush(self) -> None:
        """Send what is queued and wait until every write sent has been executed."""
        try:
            self.send()
        except BaseException:
            self.abandon()
            raise
        pipe, cur, self._pipe, self._cur = self._pipe, self._cur, None, None
        if pipe is None:
            return
        try:
            pipe.__exit__(None, None, None)  # syncs: raises the first failed write's error
        finally:
            cur.close()

    def abandon(self) -> None:
        """The page failed: leave pipeline mode without waiting on its writes (the transaction is
        rolled back next)."""
        pipe, cur, self._pipe, self._cur = self._pipe, self._cur, None, None
        if pipe is not None:
            err = RuntimeError("page abandoned")
            pipe.__exit__(type(err), err, None)
            cur.close()


def _pg_params(rows: Sequence[dict[str, Any]], columns: tuple[str, ...], is_json: tuple[bool, ...]) -> tuple[Any, ...]:
    params = []
    for c, j in zip(columns, is_json, strict=True):
        values = [r[c] for r in rows]
        params.append([_json_text(v) for v in values] if j else values)
    return tuple(params)
