"""Repositories: every read and write of hub state, in bulk, on a caller's connection.

Callers own the transaction: the sync engine commits one page (entities, links,
change log, cursor, run counters) as a single transaction, which is the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import NullType

from state.bulk import Batch
from state.schema import (
    change_log,
    cursors,
    external_links,
    leases,
    rate_budgets,
    retry_queue,
    sync_runs,
)

#: key of the PostgreSQL advisory lock that orders change-log writers (see append_changes)
CHANGE_LOG_LOCK = 0x43524D48  # "CRMH"


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def among(conn: Connection, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `= ANY(array)`, one parameter whatever the count, so
    the statement text is the same every page and psycopg prepares it once."""
    if conn.dialect.name == "postgresql":
        # an expression such as lower(email) has no type of its own: its values are text
        item = column.type if not isinstance(column.type, NullType) else Text()
        # func.any, not any_(): any_() puts the bound list in a reference cycle, so each
        # page's ids lived until the cycle collector ran (~20 MB over a 100k-call sync)
        return column.op("=", is_comparison=True)(func.any(bindparam(None, list(values), type_=postgresql.ARRAY(item))))
    return column.in_(values)


def parts(conn: Connection, seq: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """`seq` in parts for one `among()` each: all of it on PostgreSQL, where the values are
    one array parameter (a 1,000-record page was two queries), 900 at a time on SQLite."""
    if conn.dialect.name == "postgresql":
        if seq:
            yield seq
        return
    yield from chunks(seq)


def chunks(seq: Sequence[Any], n: int = 900) -> Iterable[Sequence[Any]]:
    # SQLite caps bound parameters per statement; PostgreSQL is happier with bounded IN lists too.
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


# -- canonical entities --------------------------------------------------------------------------

def _pg_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """A hot read on the driver's cursor: constant SQL (prepared by psycopg after a few runs),
    none of the expression building a Core select costs on every page."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def load_entities(conn: Connection, table: Table, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    if conn.dialect.name == "postgresql":
        names = list(table.c.keys())
        rows = _pg_rows(conn, f"SELECT {', '.join(names)} FROM {table.schema}.{table.name} WHERE id = ANY(%s)",
                        (list(ids),))
        return {r[0]: dict(zip(names, r, strict=True)) for r in rows}
    out: dict[str, dict[str, Any]] = {}
    for part in chunks(ids):
        for row in conn.execute(select(table).where(among(conn, table.c.id, part))).mappings():
            out[row["id"]] = dict(row)
    return out


def insert_entities(batch: Batch, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert entities known to be new (their ids were just made)."""
    batch.insert_rows(table, rows)


def upsert_entities(batch: Batch, table: Table, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Insert new rows and overwrite `columns` of existing ones, in one statement."""
    batch.insert_rows(table, rows, conflict=["id"], update=[c for c in columns if c != "id"])


def archive_entities(conn: Connection, table: Table, ids: Sequence[str], at: datetime) -> None:
    if ids:
        conn.execute(update(table).where(table.c.id.in_(ids)).values(archived_at=at))


# -- external links ------------------------------------------------------------------------------

def lookup_links(conn: Connection, connector: str, entity: str, external_ids: Sequence[str]) -> dict[str, tuple[str, datetime | None]]:
    """external id -> (canonical id, deleted_at) for one connector instance and entity."""
    if not external_ids:
        return {}
    if conn.dialect.name == "postgresql":
        rows = _pg_rows(conn, "SELECT external_id, entity_id, deleted_at FROM hub.external_links "
                        "WHERE connector = %s AND entity = %s AND external_id = ANY(%s)",
                        (connector, entity, list(external_ids)))
        return {ext: (eid, deleted) for ext, eid, deleted in rows}
    out: dict[str, tuple[str, datetime | None]] = {}
    t = external_links
    for part in chunks(external_ids):
        q = select(t.c.external_id, t.c.entity_id, t.c.deleted_at).where(
            t.c.connector == connector, t.c.entity == entity, among(conn, t.c.external_id, part)
        )
        for ext, eid, deleted in conn.execute(q):
            out[ext] = (eid, deleted)
    return out


def insert_links(batch: Batch, rows: list[dict[str, Any]]) -> None:
    batch.insert_rows(external_links, rows)


def set_links_deleted(conn: Connection, connector: str, entity: str, external_ids: Sequence[str], at: datetime | None) -> None:
    if external_ids:
        t = external_links
        conn.execute(
            update(t)
            .where(t.c.connector == connector, t.c.entity == entity, t.c.external_id.in_(external_ids))
            .values(deleted_at=at)
        )


def live_links_elsewhere(conn: Connection, entity: str, entity_ids: Sequence[str], connector: str) -> set[str]:
    """Canonical ids that some *other* system still links to (so a delete must not archive them)."""
    t = external_links
    out: set[str] = set()
    for part in parts(conn, entity_ids):
        q = select(t.c.entity_id).where(
            t.c.entity == entity, among(conn, t.c.entity_id, part), t.c.deleted_at.is_(None), t.c.connector != connector
        )
        out.update(r[0] for r in conn.execute(q))
    return out


def linked_systems(conn: Connection, entity: str, entity_ids: Sequence[str]) -> dict[str, set[str]]:
    """Canonical id -> the connector instances that still link it (live links only)."""
    t = external_links
    out: dict[str, set[str]] = {}
    for part in parts(conn, entity_ids):
        q = select(t.c.entity_id, t.c.connector).where(
            t.c.entity == entity, among(conn, t.c.entity_id, part), t.c.deleted_at.is_(None))
        for eid, connector in conn.execute(q):
            out.setdefault(eid, set()).add(connector)
    return out


def refresh_statistics(engine: Engine, tables: Sequence[Table], rows: int = 0) -> None:
    """ANALYZE on PostgreSQL (outside the page transaction); SQLite plans well without it.

    Only the tables the planner thinks smaller than `rows` (what this run has written so far),
    or never analysed: a table that already held many rows plans well, and analysing it again
    samples 30,000 rows for nothing (measured 0.9 s of an 11.6 s merge run). The change log
    only for the columns its look-ups filter on (a wave reads it by entity id every page),
    not its JSON: a server with autovacuum off (as on the project's machine) left it never
    analysed, and a 1,000-record `migrate delta` over 1M rows spent 0.6 s in one such query.
    """
    if engine.dialect.name != "postgresql":
        return
    wanted = sorted({f"{t.schema}.{t.name}" for t in tables})
    if not wanted:
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        est: dict[str, float] = dict(c.exec_driver_sql(
            "SELECT n.nspname || '.' || c.relname, c.reltuples FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY(%(names)s)",
            {"names": wanted}).all())
        stale = [n for n in wanted if est.get(n, -1) < max(rows, 1)]
        if stale:
            log = f"{change_log.schema}.{change_log.name}"
            c.exec_driver_sql("ANALYZE " + ", ".join(f"{n} (seq, entity, entity_id, run_id)" if n == log else n
                                                      for n in stale))


def relax_commits(conn: Connection) -> bool:
    """This connection's commits need not wait for the WAL flush (PostgreSQL only), until
    `restore_commits`; it is set once per run, not once per page (a round trip each).

    Safe where the data and the checkpoint that covers it commit together: a commit
    lost to a server crash loses data and checkpoint alike, and the work is redone.
    """
    if conn.dialect.name != "postgresql":
        return False
    with conn.begin():
        conn.exec_driver_sql("SET SESSION synchronous_commit = off")
    return True


def restore_commits(conn: Connection) -> None:
    """Undo `relax_commits` before the connection goes back to the pool."""
    with conn.begin():
        conn.exec_driver_sql("RESET synchronous_commit")


# -- change log ----------------------------------------------------------------------------------

def append_changes(batch: Batch, rows: list[dict[str, Any]]) -> None:
    """Append change-log rows so that sequence numbers follow commit order.

    On PostgreSQL a transaction-level advisory lock is taken first and held until
    commit, so no transaction can take a lower sequence number and commit after a
    reader has passed it. SQLite has one writer at a time already.
    """
    if not rows:
        return
    if batch.pg:
        batch.sql(f"SELECT pg_advisory_xact_lock({CHANGE_LOG_LOCK})")
    batch.insert_rows(change_log, rows)


# -- cursors -------------------------------------------------------------------------------------

def get_cursor(conn: Connection, connector: str, stream: str) -> dict[str, Any] | None:
    q = select(cursors.c.cursor).where(cursors.c.connector == connector, cursors.c.stream == stream)
    return conn.execute(q).scalar_one_or_none()


def put_cursor(conn: Connection, connector: str, stream: str, cursor: dict[str, Any] | None, at: datetime) -> None:
    stmt = _insert(conn, cursors).values(connector=connector, stream=stream, cursor=cursor, updated_at=at)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[cursors.c.connector, cursors.c.stream],
        set_={"cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at},
    ))


def all_cursors(conn: Connection) -> dict[tuple[str, str], dict[str, Any] | None]:
    return {(r.connector, r.stream): r.cursor for r in conn.execute(select(cursors))}


# -- sync runs -----------------------------------------------------------------------------------

def start_run(conn: Connection, connector: str, stream: str, at: datetime, worker: str,
              full_resync: bool = False, reason: str | None = None) -> int:
    res = conn.execute(insert(sync_runs).values(
        connector=connector, stream=stream, status="running", started_at=at, worker=worker,
        full_resync=full_resync, resync_reason=reason, read=0, written=0, deleted=0, failed=0, requests=0, pages=0,
    ).returning(sync_runs.c.id))
    return int(res.scalar_one())


def add_run_counts(conn: Connection, run_id: int, **counts: int) -> None:
    c = sync_runs.c
    conn.execute(update(sync_runs).where(c.id == run_id).values({k: c[k] + v for k, v in counts.items()}))


_CHECKPOINT_PG = """
WITH lease AS (
    UPDATE hub.leases SET expires_at = %(expires)s WHERE name = %(lease)s AND owner = %(owner)s RETURNING 1
), cur AS (
    INSERT INTO hub.cursors (connector, stream, cursor, updated_at)
    SELECT %(connector)s, %(stream)s, %(cursor)s::jsonb, %(now)s WHERE %(has_cursor)s AND EXISTS (SELECT 1 FROM lease)
    ON CONFLICT (connector, stream) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at
), run AS (
    UPDATE hub.sync_runs SET read = read + %(read)s, written = written + %(written)s,
        deleted = deleted + %(deleted)s, failed = failed + %(failed)s, requests = requests + %(requests)s,
        pages = pages + 1
    WHERE id = %(run_id)s
)
SELECT 1 / count(*) FROM lease
"""
# `1 / count(*)`: a lost lease fails the statement (division by zero) and with it the
# whole page, inside the pipeline, so nobody has to wait for an answer before COMMIT.


class LeaseLostError(Exception):
    """The page's checkpoint found the lease taken by another worker; the page is void."""


def flush_page(batch: Batch) -> None:
    """Send the page's queued writes; a failed lease check surfaces as LeaseLostError."""
    import psycopg

    try:
        batch.flush()
    except psycopg.errors.DivisionByZero:
        raise LeaseLostError("the stream's lease was lost to another worker") from None


def checkpoint(batch: Batch, *, lease: str, owner: str, now: datetime, ttl: timedelta, connector: str,
               stream: str, cursor: dict[str, Any] | None, run_id: int, read: int, written: int, deleted: int,
               failed: int, requests: int) -> bool:
    """The end of a page's transaction: renew the lease, store the cursor, count the page.

    Returns False when the lease was lost; the caller must then roll the page back. On
    PostgreSQL it joins the batch (LeaseLostError comes from `flush` instead).
    """
    if batch.pg:
        params = {"expires": now + ttl, "lease": lease, "owner": owner, "connector": connector, "stream": stream,
                  "cursor": orjson.dumps(cursor).decode() if cursor is not None else None, "now": now,
                  "has_cursor": cursor is not None, "read": read, "written": written, "deleted": deleted,
                  "failed": failed, "requests": requests, "run_id": run_id}
        batch.sql(_CHECKPOINT_PG, params)
        return True
    conn = batch.conn
    if not renew_lease(conn, lease, owner, now, ttl):
        return False
    if cursor is not None:
        put_cursor(conn, connector, stream, cursor, now)
    add_run_counts(conn, run_id, read=read, written=written, deleted=deleted, failed=failed,
                   requests=requests, pages=1)
    return True


def mark_resync(conn: Connection, run_id: int, reason: str) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(full_resync=True, resync_reason=reason))


def finish_run(conn: Connection, run_id: int, status: str, at: datetime, error: str | None = None) -> None:
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(status=status, finished_at=at, error=error))


def last_runs(conn: Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest run of each (connector, stream)."""
    newest = select(func.max(sync_runs.c.id)).group_by(sync_runs.c.connector, sync_runs.c.stream)
    q = select(sync_runs).where(sync_runs.c.id.in_(newest))
    return {(r["connector"], r["stream"]): dict(r) for r in conn.execute(q).mappings()}


# -- retry queue ---------------------------------------------------------------------------------

#: the longest vendor id the hub keeps (external links, the retry queue, the crosswalk)
ID_MAX: int = external_links.c.external_id.type.length  # type: ignore[attr-defined]


def _queued_id(ext: str) -> str:
    """A retry-queue key for any id: a longer one than the hub keeps is shortened, uniquely (its
    row is dead at once: the vendor's id will not get shorter, and a replay would need it whole)."""
    if len(ext) <= ID_MAX:
        return ext
    import hashlib
    return f"{ext[:ID_MAX - 30]}…sha256:{hashlib.sha256(ext.encode()).hexdigest()[:20]}"


def record_failures(conn: Connection, connector: str, stream: str, failures: list[dict[str, Any]],
                    at: datetime, backoff: timedelta, max_attempts: int) -> None:
    """Queue failed records, or count one more attempt for ones already queued.

    Each failure: external_id, payload, reason. After `max_attempts` a row is dead.
    """
    if not failures:
        return
    rows = [{
        "connector": connector, "stream": stream, "external_id": _queued_id(f["external_id"]), "payload": f["payload"],
        "reason": f["reason"][:4000], "attempts": 1, "first_failed_at": at, "last_failed_at": at,
        "next_attempt_at": at + backoff, "dead": max_attempts <= 1 or len(f["external_id"]) > ID_MAX,
    } for f in failures]
    stmt = _insert(conn, retry_queue)
    attempts = retry_queue.c.attempts + 1
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[retry_queue.c.connector, retry_queue.c.stream, retry_queue.c.external_id],
        set_={
            "payload": stmt.excluded.payload, "reason": stmt.excluded.reason, "attempts": attempts,
            "last_failed_at": stmt.excluded.last_failed_at,
            # a fixed back-off from the last failure: a bad record does not cost every run
            "next_attempt_at": stmt.excluded.next_attempt_at,
            "dead": attempts >= max_attempts,
        },
    ), rows)


def clear_failures(conn: Connection, connector: str, stream: str, external_ids: Sequence[str]) -> int:
    n = 0
    t = retry_queue
    for part in parts(conn, external_ids):
        n += conn.execute(delete(t).where(t.c.connector == connector, t.c.stream == stream,
                                          among(conn, t.c.external_id, part))).rowcount
    return n


def count_failures(conn: Connection, connector: str | None = None, stream: str | None = None) -> dict[tuple[str, str, bool], int]:
    t = retry_queue
    q = select(t.c.connector, t.c.stream, t.c.dead, func.count()).group_by(t.c.connector, t.c.stream, t.c.dead)
    if connector:
        q = q.where(t.c.connector == connector)
    if stream:
        q = q.where(t.c.stream == stream)
    return {(c, s, bool(d)): n for c, s, d, n in conn.execute(q)}


def due_failures(conn: Connection, connector: str, stream: str, now: datetime, limit: int = 500) -> list[dict[str, Any]]:
    t = retry_queue
    q = (select(t).where(t.c.connector == connector, t.c.stream == stream, t.c.dead.is_(False),
                         t.c.next_attempt_at <= now).order_by(t.c.id).limit(limit))
    return [dict(r) for r in conn.execute(q).mappings()]


def list_failures(conn: Connection, *, connector: str | None = None, dead: bool | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    t = retry_queue
    q = select(t).order_by(t.c.id).limit(limit)
    if connector:
        q = q.where(t.c.connector == connector)
    if dead is not None:
        q = q.where(t.c.dead.is_(dead))
    return [dict(r) for r in conn.execute(q).mappings()]


def requeue_failures(conn: Connection, ids: Sequence[int] | None, now: datetime, connector: str | None = None) -> int:
    """Make rows (dead ones too) due now with a fresh attempt count: an operator's replay."""
    t = retry_queue
    cond: list[ColumnElement[bool]] = [t.c.id.in_(ids)] if ids else []
    if connector:
        cond.append(t.c.connector == connector)
    return conn.execute(update(t).where(and_(True, *cond)).values(dead=False, attempts=0, next_attempt_at=now)).rowcount


def drop_failures(conn: Connection, ids: Sequence[int] | None, connector: str | None = None, dead_only: bool = False) -> int:
    t = retry_queue
    cond: list[ColumnElement[bool]] = [t.c.id.in_(ids)] if ids else []
    if connector:
        cond.append(t.c.connector == connector)
    if dead_only:
        cond.append(t.c.dead.is_(True))
    return conn.execute(delete(t).where(and_(True, *cond))).rowcount


# -- shared request budgets ---------------------------------------------------------------------

def take_budget(conn: Connection, connector: str, rate: float, burst: int, chunk: int, now: float) -> float:
    """Take `chunk` tokens from the instance's shared bucket; return how long to wait before using them.

    The bucket refills at `rate` per second up to `burst`; it may go into debt, which is
    the wait. Times are epoch seconds (portable arithmetic on both backends).
    """
    least, greatest = (func.least, func.greatest) if conn.dialect.name == "postgresql" else (func.min, func.max)
    t = rate_budgets
    stmt = _insert(conn, t).values(connector=connector, tokens=float(burst - chunk), updated_at=now, paused_until=0.0)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.connector],
        set_={"tokens": least(float(burst), t.c.tokens + rate * greatest(0.0, now - t.c.updated_at)) - chunk,
              "updated_at": greatest(t.c.updated_at, now)},
    ).returning(t.c.tokens, t.c.paused_until)
    tokens, paused_until = conn.execute(stmt).one()
    wait = -tokens / rate if tokens < 0 and rate > 0 else 0.0
    return max(wait, (paused_until or 0.0) - now)


def pause_budget(conn: Connection, connector: str, until: float) -> None:
    t = rate_budgets
    stmt = _insert(conn, t).values(connector=connector, tokens=0.0, updated_at=0.0, paused_until=until)
    greatest = func.greatest if conn.dialect.name == "postgresql" else func.max
    conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.connector],
                                            set_={"paused_until": greatest(t.c.paused_until, until)}))


# -- leases --------------------------------------------------------------------------------------

def acquire_lease(conn: Connection, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Take `name` if it is free, expired, or already ours. Atomic on both backends."""
    stmt = _insert(conn, leases).values(name=name, owner=owner, acquired_at=now, expires_at=now + ttl)
    stmt = stmt.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"owner": stmt.excluded.owner, "acquired_at": stmt.excluded.acquired_at,
              "expires_at": stmt.excluded.expires_at},
        where=(leases.c.expires_at < now) | (leases.c.owner == owner),
    ).returning(leases.c.owner)
    # RETURNING, not rowcount: drivers disagree on rowcount for INSERT .. ON CONFLICT
    return conn.execute(stmt).first() is not None


def take_over_lease(conn: Connection, name: str, old_owner: str, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Take `name` from `old_owner` (known dead); False if someone else got there first."""
    res = conn.execute(update(leases).where(leases.c.name == name, leases.c.owner == old_owner)
                       .values(owner=owner, acquired_at=now, expires_at=now + ttl))
    return res.rowcount == 1


def renew_lease(conn: Connection, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Extend our lease; False means it was lost (expired and taken), so this writer must stop."""
    res = conn.execute(update(leases).where(leases.c.name == name, leases.c.owner == owner)
                       .values(expires_at=now + ttl))
    return res.rowcount == 1


def release_lease(conn: Connection, name: str, owner: str) -> None:
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.owner == owner))


def lease_holder(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(leases).where(leases.c.name == name)).mappings().first()
    return dict(row) if row else None

