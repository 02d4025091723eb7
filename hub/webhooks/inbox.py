"""`hub.webhook_inbox`: raw vendor events, stored before they are acknowledged, then processed.

Life of a row::

    pending ──claim──> (processing, in the claimer's transaction) ──mark_done──> done
                                     └──mark_failed──> failed ──(next_attempt_at)──> claimed again
                                                          └── after max_attempts ──> dead ──requeue──> pending

Processing is meant to run in the transaction that claimed the rows, so the event's
effects and its `done` commit together (a crash redoes the event, never half of it)::

    with engine.begin() as conn:
        for ev in inbox.claim(conn, 100, "worker-1"):
            try:
                with conn.begin_nested():          # a savepoint per event
                    process(conn, ev)
                inbox.mark_done(conn, [ev["id"]])
            except Exception as err:
                inbox.mark_failed(conn, [ev["id"]], repr(err))

On PostgreSQL `claim` locks its rows with `FOR UPDATE SKIP LOCKED`, so concurrent
claimers get disjoint rows and a claimer that dies releases its rows with its
connection. SQLite has one writer at a time (BEGIN IMMEDIATE), so a plain select is
enough there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, case, delete, func, select, update
from sqlalchemy.dialects import sqlite

from state.schema import webhook_inbox

__all__ = [
    "InboxRow",
    "InboxStats",
    "claim",
    "insert_events",
    "mark_done",
    "mark_failed",
    "pg_insert",
    "purge_done",
    "requeue",
    "stats",
]

T = webhook_inbox
CLAIMABLE = ("pending", "failed")
UNFINISHED = ("pending", "failed", "dead")


@dataclass(frozen=True)
class InboxRow:
    """One event to store: `raw` is its JSON text, stored as received where it can be."""

    connector: str
    event_id: str
    received_at: datetime
    raw: str
    headers: dict[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.connector, self.event_id)


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# Binary array parameters (%b): psycopg's text-array quoting was measured costing more CPU than the insert.
_PG_INSERT = """
INSERT INTO hub.webhook_inbox (connector, event_id, received_at, headers, body, status, attempts, next_attempt_at)
SELECT u.c, u.e, u.r, u.h::jsonb, u.b::jsonb, 'pending', 0, u.r
FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[]) WITH ORDINALITY AS u(c, e, r, h, b, n)
ORDER BY u.n
ON CONFLICT (connector, event_id) DO NOTHING
RETURNING connector, event_id
"""


def _pg_params(rows: Sequence[InboxRow]) -> tuple[list[Any], ...]:
    headers = [None if r.headers is None else orjson.dumps(r.headers).decode() for r in rows]
    return ([r.connector for r in rows], [r.event_id for r in rows], [r.received_at for r in rows],
            headers, [r.raw for r in rows])


def pg_insert(driver_conn: Any, rows: Sequence[InboxRow]) -> set[tuple[str, str]]:
    """`insert_events` on a bare psycopg connection (the group committer's hot path); no commit."""
    if not rows:
        return set()
    with driver_conn.cursor() as cur:
        cur.execute(_PG_INSERT, _pg_params(sorted(rows, key=lambda r: r.key)))
        return {(c, e) for c, e in cur.fetchall()}


def insert_events(conn: Connection, rows: Sequence[InboxRow]) -> set[tuple[str, str]]:
    """Store `rows` in one statement; a (connector, event_id) already stored is skipped.

    Returns the keys that were new. Rows are written in key order, so two concurrent
    batches that share keys lock them in the same order and cannot deadlock.
    """
    if not rows:
        return set()
    rows = sorted(rows, key=lambda r: r.key)
    if conn.dialect.name == "postgresql":
        return {(c, e) for c, e in conn.exec_driver_sql(_PG_INSERT, _pg_params(rows)).fetchall()}
    # SQLite: embedded and single-writer, so a statement per row is fine and tells new from known.
    new: set[tuple[str, str]] = set()
    stmt = sqlite.insert(T).on_conflict_do_nothing(index_elements=[T.c.connector, T.c.event_id])
    for r in rows:
        res = conn.execute(stmt, {
            "connector": r.connector, "event_id": r.event_id, "received_at": r.received_at,
            "headers": r.headers, "body": orjson.loads(r.raw), "status": "pending", "attempts": 0,
            "next_attempt_at": r.received_at,
        })
        if res.rowcount:
            new.add(r.key)
    return new


def claim(conn: Connection, limit: int, worker: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Lock up to `limit` due rows (oldest first) in the caller's transaction and return them."""
    now = _now(now)
    due = (select(T.c.id)
           .where(T.c.status.in_(CLAIMABLE), T.c.next_attempt_at <= now)
           .order_by(T.c.id).limit(limit)
           .with_for_update(skip_locked=True))  # rendered on PostgreSQL only
    # MATERIALIZED: the locking select must run exactly once, not be re-planned into the update.
    claimable = due.cte("claimable").prefix_with("MATERIALIZED", dialect="postgresql")
    stmt = (update(T).where(T.c.id.in_(select(claimable.c.id)))
            .values(worker=worker).returning(*T.c))
    return sorted((dict(r) for r in conn.execute(stmt).mappings()), key=lambda r: r["id"])


def mark_done(conn: Connection, ids: Sequence[int], now: datetime | None = None) -> None:
    if ids:
        conn.execute(update(T).where(T.c.id.in_(ids))
                     .values(status="done", processed_at=_now(now)))


def mark_failed(conn: Connection, ids: Sequence[int], error: str, now: datetime | None = None, *,
                max_attempts: int = 5, backoff: timedelta = timedelta(seconds=60)) -> None:
    """Count a failed attempt: due again after `backoff`, dead after `max_attempts` attempts."""
    if not ids:
        return
    now = _now(now)
    attempts = T.c.attempts + 1
    conn.execute(update(T).where(T.c.id.in_(ids)).values(
        attempts=attempts, last_error=error[:4000], processed_at=now, next_attempt_at=now + backoff,
        status=case((attempts >= max_attempts, "dead"), else_="failed"),
    ))


def requeue(conn: Connection, ids: Sequence[int] | None = None, *, connector: str | None = None,
            now: datetime | None = None) -> int:
    """An operator's replay: dead (and failed) rows become due now with a fresh attempt count."""
    cond: list[ColumnElement[bool]] = [T.c.status.in_(("dead", "failed"))]
    if ids:
        cond.append(T.c.id.in_(ids))
    if connector:
        cond.append(T.c.connector == connector)
    res = conn.execute(update(T).where(*cond).values(status="pending", attempts=0, next_attempt_at=_now(now)))
    return int(res.rowcount)


def purge_done(conn: Connection, processed_before: datetime) -> int:
    """Delete rows processed before `processed_before` (done rows are only kept for audit)."""
    res = conn.execute(delete(T).where(T.c.status == "done", T.c.processed_at < processed_before))
    return int(res.rowcount)


@dataclass(frozen=True)
class InboxStats:
    #: (connector, status) -> rows, for the unfinished statuses (pending, failed, dead)
    depth: dict[tuple[str, str], int]
    #: (connector, status) -> age in seconds of the oldest such row
    oldest_age: dict[tuple[str, str], float]


def stats(conn: Connection, now: datetime | None = None) -> InboxStats:
    """Depth and age of the unfinished rows (done rows are not counted: that table only grows)."""
    now = _now(now)
    q = (select(T.c.connector, T.c.status, func.count(), func.min(T.c.received_at))
         .where(T.c.status.in_(UNFINISHED)).group_by(T.c.connector, T.c.status))
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    for connector, status, n, first in conn.execute(q):
        depth[(connector, status)] = int(n)
        if first is not None:
            if first.tzinfo is None:  # min() on SQLite bypasses the column type
                first = datetime.fromisoformat(str(first)).replace(tzinfo=UTC)
            oldest[(connector, status)] = max(0.0, (now - first).total_seconds())
    return InboxStats(depth, oldest)
