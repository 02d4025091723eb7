"""Read a legacy CRM's tables: keyset pages on the key, then changes by an `updated_at` column.

The legacy database is only ever read: its connection is read-only at the session level
(MariaDB/MySQL `SET SESSION TRANSACTION READ ONLY`, PostgreSQL `default_transaction_read_only`,
SQLite opened with `mode=ro`), every page is one short transaction (so no snapshot or metadata
lock is held between pages while the hub writes), and no statement takes a row lock.

Cursor (opaque to the engine)::

    {"phase": "load", "after": <key|None>, "since": <iso|None>}    full load, keyset on the key
    {"phase": "delta", "since": <iso|None>, "after": <key|None>}     changes: (updated_at, key) > cursor

`since` of a load is the table's newest `updated_at` when the load started: the delta that
follows starts there (inclusive), so a row changed while the load ran is read again rather
than missed; the writer absorbs the repeat. Rows whose `updated_at` is NULL are only read by
full loads. Deletes: a stream's `deleted:` column marks soft-deleted rows, reported as the page's
deletes in either phase; rows gone from the table (hard deletes) are found by `migrate delta`,
which asks `existing()` which of a wave's migrated ids are still there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, TextClause, bindparam, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    RetriableError,
    StreamSpec,
)

__all__ = ["TARGETS", "LegacySqlConfig", "LegacySqlConnector", "StreamTable"]

#: stream name -> canonical target, when a stream does not say `target:`
TARGETS = {"accounts": "account", "companies": "account", "contacts": "contact", "people": "contact",
           "leads": "lead", "opportunities": "opportunity", "deals": "opportunity", "activities": "activity"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
MAX_PAGE = 10_000


def _identifier(v: str, what: str) -> str:
    if not _IDENT.match(v):
        raise ValueError(f"{what} {v!r} is not a plain SQL identifier. Fix: use letters, digits and _ "
                         "(optionally `schema.table`)")
    return v


class StreamTable(BaseModel):
    """One stream: `{table: companies, key: id, updated_at: updated_on}`."""

    model_config = ConfigDict(extra="forbid")

    table: str
    key: str = "id"
    updated_at: str | None = None
    #: canonical target; by default from the stream name (accounts -> account, ...)
    target: str | None = None
    #: a standing filter on every read of this stream (SQL, the legacy database's dialect)
    where: str | None = None
    #: a soft-delete column (`is_deleted`, `deleted_at`): a row holding anything but NULL, 0, false
    #: or '' there is reported as deleted, not as a record
    deleted: str | None = None

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _identifier(v, "table")

    @field_validator("key", "updated_at", "deleted")
    @classmethod
    def _column(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, "column")


class LegacySqlConfig(ConnectorConfig):
    url: str = Field(description="SQLAlchemy URL of the legacy database, e.g. mysql+pymysql://...")
    streams: dict[str, StreamTable]  # type: ignore[assignment]
    page_size: int = Field(1000, ge=1, le=MAX_PAGE)
    #: the zone of naive date-times in the legacy database (most legacy CRMs store local time)
    timezone: str = "UTC"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            make_url(v)
        except Exception as e:
            raise ValueError(f"not a database URL ({e}). Fix: write e.g. "
                             "mysql+pymysql://user@host:3306/db or sqlite:///legacy.db") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}. Fix: use an IANA name such as UTC or Europe/Paris") from None
        return v

    @field_validator("streams")
    @classmethod
    def _targets(cls, v: dict[str, StreamTable]) -> dict[str, StreamTable]:
        for name, s in v.items():
            if s.target is None and name not in TARGETS:
                raise ValueError(f"stream {name!r} has no `target:` and its name does not imply one. "
                                 f"Fix: add `target: account|contact|lead|opportunity|activity` to it")
        return v


def _flagged(spec: StreamTable, row: dict[str, Any]) -> bool:
    """Whether the row is soft-deleted by its stream's `deleted` column."""
    if spec.deleted is None:
        return False
    v = row.get(spec.deleted)
    return v is not None and v not in (0, False, "", "0")


def read_only_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose sessions cannot write, whatever SQL is sent."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite" and u.database and u.database != ":memory:" and not u.database.startswith("file:"):
        u = u.set(database=f"file:{u.database}?mode=ro", query={**u.query, "uri": "true"})
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["options"] = "-c default_transaction_read_only=on"
    engine = create_engine(u, connect_args=connect_args, pool_pre_ping=backend != "sqlite", **kwargs)
    if backend in ("mysql", "mariadb"):
        @event.listens_for(engine, "connect")
        def _ro(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            # READ COMMITTED: each page sees committed rows without holding an old snapshot
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("SET SESSION TRANSACTION READ ONLY")
            cur.close()
    return engine


class LegacySqlConnector(Connector):
    kind: ClassVar[str] = "legacy_sql"
    Config: ClassVar[type[ConnectorConfig]] = LegacySqlConfig

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, LegacySqlConfig)
        self.cfg = config
        self.tz = ZoneInfo(config.timezone)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = read_only_engine(self.cfg.url)
        return self._engine

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=n, target=s.target or TARGETS[n], primary_key=s.key, cursor_kind=CursorKind.KEY)
                for n, s in self.cfg.streams.items()]

    def check(self) -> str:
        with self._conn() as c:
            counts = [f"{n}: {c.execute(text(f'SELECT COUNT(*) FROM {self._q(s.table)}')).scalar_one()} rows"
                      for n, s in self.cfg.streams.items()]
        return "; ".join(counts)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- SQL ---------------------------------------------------------------------------------------

    def _q(self, name: str) -> str:
        prep = self.engine.dialect.identifier_preparer
        return ".".join(prep.quote(p) for p in name.split("."))

    def _conn(self) -> Any:
        try:
            return self.engine.connect()
        except SQLAlchemyError as e:
            orig = getattr(e, "orig", None)
            raise RetriableError(f"{self.name}: cannot connect to the legacy database: "
                                 f"{type(orig or e).__name__}") from None

    def _spec(self, stream: str) -> StreamTable:
        if stream not in self.cfg.streams:
            raise FatalError(f"{self.name} has no stream {stream!r} (it has: {', '.join(self.cfg.streams)})")
        return self.cfg.streams[stream]

    def _fetch(self, sql: str | TextClause, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            with self._conn() as c:
                return [dict(r) for r in c.execute(text(sql) if isinstance(sql, str) else sql, params).mappings()]
        except SQLAlchemyError as e:
            orig = getattr(e, "orig", None)
            raise FatalError(f"{self.name}: legacy query failed: {type(orig or e).__name__}: {orig or e}") from None

    # -- values ------------------------------------------------------------------------------------

    def _iso(self, v: datetime) -> str:
        if v.tzinfo is None:
            v = v.replace(tzinfo=self.tz)
        return v.astimezone(UTC).isoformat()

    def _plain(self, v: Any) -> Any:
        """A column value as JSON-able data: times as ISO-8601 UTC, decimals as text."""
        if isinstance(v, datetime):
            return self._iso(v)
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, Decimal):
            return str(v)
        if isinstance(v, bytes | bytearray | memoryview):
            return bytes(v).decode("utf-8", errors="replace")
        return v

    def _record(self, spec: StreamTable, row: dict[str, Any]) -> RawRecord:
        data = {k: self._plain(v) for k, v in row.items()}
        up = data.get(spec.updated_at) if spec.updated_at else None
        if isinstance(up, str) and up and "T" not in up and " " in up:  # SQLite text times
            try:
                up = self._iso(datetime.fromisoformat(up))
            except ValueError:
                up = None
        return RawRecord(external_id=str(row[spec.key]), updated_at=up if isinstance(up, str) else None, data=data)

    # -- reading -----------------------------------------------------------------------------------

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        spec = self._spec(stream)
        cur: Cursor = dict(cursor) if cursor else {"phase": "load", "after": None, "since": self._newest(spec)}
        if cur.get("phase") not in ("load", "delta"):
            from hub.sdk import CursorExpired
            raise CursorExpired(f"unreadable cursor {cursor!r}")
        while True:
            if cur["phase"] == "load":
                rows = self._load_page(spec, cur.get("after"))
            else:
                if spec.updated_at is None:
                    # no change column: a delta is a full re-read (the writer skips what is unchanged)
                    cur = {"phase": "load", "after": None, "since": None}
                    continue
                rows = self._delta_page(spec, cur.get("since"), cur.get("after"))
            gone: list[str] = []
            records = []
            for r in rows:
                if _flagged(spec, r):
                    gone.append(str(r[spec.key]))
                else:
                    records.append(self._record(spec, r))
            nxt = dict(cur)
            if rows:
                last = rows[-1]
                nxt["after"] = self._plain(last[spec.key])
                if cur["phase"] == "delta":
                    nxt["since"] = self._raw_time(last[spec.updated_at])  # type: ignore[index]
            if len(rows) < self.cfg.page_size:
                if cur["phase"] == "load":
                    nxt = {"phase": "delta", "since": cur.get("since"), "after": None}
                yield Page(records=records, deleted=gone, next_cursor=nxt)
                return
            yield Page(records=records, deleted=gone, next_cursor=nxt)
            cur = nxt

    def existing(self, stream: str, external_ids: Sequence[str]) -> set[str] | None:
        """The ids whose row is still in the table and not soft-deleted (one keyed read)."""
        spec = self._spec(stream)
        if not external_ids:
            return set()
        k = self._q(spec.key)
        cols = k + (f", {self._q(spec.deleted)}" if spec.deleted else "")
        sql = text(f"SELECT {cols} FROM {self._q(spec.table)} WHERE {k} IN :ids").bindparams(
            bindparam("ids", expanding=True))
        return {str(r[spec.key]) for r in self._fetch(sql, {"ids": list(external_ids)}) if not _flagged(spec, r)}

    @staticmethod
    def _raw_time(v: Any) -> Any:
        """A change-column value as the cursor keeps it: the database's own text of it."""
        return v.isoformat(sep=" ") if isinstance(v, datetime) else v

    def _newest(self, spec: StreamTable) -> Any:
        if spec.updated_at is None:
            return None
        rows = self._fetch(f"SELECT MAX({self._q(spec.updated_at)}) AS m FROM {self._q(spec.table)}", {})
        return self._raw_time(rows[0]["m"]) if rows else None

    def _where(self, spec: StreamTable, extra: str | None) -> list[str]:
        parts = [f"({spec.where})"] if spec.where else []
        if extra:
            parts.append(extra)
        return parts

    def _load_page(self, spec: StreamTable, after: Any) -> list[dict[str, Any]]:
        k = self._q(spec.key)
        parts = self._where(spec, f"{k} > :after" if after is not None else None)
        where = f" WHERE {' AND '.join(parts)}" if parts else ""
        sql = f"SELECT * FROM {self._q(spec.table)}{where} ORDER BY {k} LIMIT {self.cfg.page_size}"
        return self._fetch(sql, {"after": after})

    def _delta_page(self, spec: StreamTable, since: Any, after: Any) -> list[dict[str, Any]]:
        assert spec.updated_at is not None
        k, u = self._q(spec.key), self._q(spec.updated_at)
        if since is None:
            cond = f"{u} IS NOT NULL"
        elif after is None:
            cond = f"{u} >= :since"
        else:
            cond = f"({u} > :since OR ({u} = :since AND {k} > :after))"
        parts = self._where(spec, cond)
        sql = (f"SELECT * FROM {self._q(spec.table)} WHERE {' AND '.join(parts)} "
               f"ORDER BY {u}, {k} LIMIT {self.cfg.page_size}")
        return self._fetch(sql, {"since": since, "after": after})

    def count_rows(self, stream: str) -> int:
        """Rows of a stream's table (a progress bar's total)."""
        spec = self._spec(stream)
        where = f" WHERE {spec.where}" if spec.where else ""
        return int(self._fetch(f"SELECT COUNT(*) AS n FROM {self._q(spec.table)}{where}", {})[0]["n"])

    # -- wave selection (hub.migrate asks; any connector without it is filtered in the hub) -------

    def match_where(self, stream: str, where: str, keys: Sequence[str]) -> set[str]:
        """The keys among `keys` whose rows satisfy `where` (SQL in the legacy database's dialect)."""
        if not keys:
            return set()
        spec = self._spec(stream)
        k = self._q(spec.key)
        names = {f"k{i}": v for i, v in enumerate(keys)}
        marks = ", ".join(f":{n}" for n in names)
        sql = f"SELECT {k} AS k FROM {self._q(spec.table)} WHERE {k} IN ({marks}) AND ({where})"
        if self.engine.dialect.name == "postgresql":
            sql = f"SELECT {k} AS k FROM {self._q(spec.table)} WHERE CAST({k} AS TEXT) IN ({marks}) AND ({where})"
        return {str(r["k"]) for r in self._fetch(sql, names)}
