"""Repositories of wave migrations (hub.migrate): waves, the id crosswalk, rejected rows.

Bulk by page like state.repos: one statement per table per page, bound parameters only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, literal, select, update

from state.bulk import Batch
from state.repos import among, chunks, parts
from state.schema import change_log, migration_items, migration_rejects, migration_waves, sync_runs

__all__ = [
    "add_rejects",
    "changes_for",
    "clear_rejects",
    "delete_items",
    "get_wave",
    "held_ids",
    "item_counts",
    "items_for",
    "list_waves",
    "mark_deleted",
    "page_items",
    "reject_counts",
    "rejects",
    "run_ops",
    "save_wave",
    "upsert_items",
    "wave_run_ids",
]

ITEM_UPDATE = ("entity_id", "checksum", "pass_no", "written_at", "deleted_at")


# -- waves ---------------------------------------------------------------------------------------

def get_wave(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(migration_waves).where(migration_waves.c.name == name)).mappings().first()
    return dict(row) if row else None


def list_waves(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(migration_waves).order_by(migration_waves.c.name)).mappings()]


def save_wave(conn: Connection, name: str, at: datetime, **values: Any) -> None:
    """Insert the wave or update the given columns of it."""
    if get_wave(conn, name) is None:
        conn.execute(migration_waves.insert().values(name=name, updated_at=at, **values))
    else:
        conn.execute(update(migration_waves).where(migration_waves.c.name == name).values(updated_at=at, **values))


# -- the crosswalk -------------------------------------------------------------------------------

def items_for(conn: Connection, source: str, stream: str, legacy_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """legacy id -> its crosswalk row (whatever wave holds it)."""
    t = migration_items
    out: dict[str, dict[str, Any]] = {}
    for part in parts(conn, list(legacy_ids)):
        q = select(t.c.legacy_id, t.c.wave, t.c.entity_id, t.c.action, t.c.checksum, t.c.pass_no).where(
            t.c.source == source, t.c.stream == stream, among(conn, t.c.legacy_id, part))
        for r in conn.execute(q).mappings():
            out[r["legacy_id"]] = dict(r)
    return out


def upsert_items(batch: Batch, rows: list[dict[str, Any]]) -> None:
    """Record what a page wrote; a row already there keeps its wave and first action."""
    batch.insert_rows(migration_items, rows, conflict=["source", "stream", "legacy_id"], update=ITEM_UPDATE)


def page_items(conn: Connection, wave: str, stream: str, after: str | None, limit: int,
               source: str | None = None) -> list[dict[str, Any]]:
    """The wave's crosswalk rows of one stream, in legacy-id order, after `after` (keyset).
    With `source` (the wave's), each page is a range scan of the primary key, not a sort."""
    t = migration_items
    q = select(t).where(t.c.wave == wave, t.c.stream == stream)
    if source is not None:
        q = q.where(t.c.source == source)
    if after is not None:
        q = q.where(t.c.legacy_id > after)
    return [dict(r) for r in conn.execute(q.order_by(t.c.legacy_id).limit(limit)).mappings()]


def delete_items(conn: Connection, source: str, stream: str, legacy_ids: Sequence[str]) -> None:
    t = migration_items
    for part in chunks(list(legacy_ids)):
        conn.execute(delete(t).where(t.c.source == source, t.c.stream == stream, t.c.legacy_id.in_(part)))


def item_counts(conn: Connection, wave: str) -> dict[str, dict[str, int]]:
    """stream -> action -> count of the wave's live records; legacy deletes it applied as `deleted`."""
    t = migration_items
    out: dict[str, dict[str, int]] = {}
    gone = case((t.c.deleted_at.is_(None), t.c.action), else_=literal("deleted"))
    q = select(t.c.stream, gone, func.count()).where(t.c.wave == wave).group_by(t.c.stream, gone)
    for stream, action, n in conn.execute(q):
        out.setdefault(stream, {})[action] = int(n)
    return out


def mark_deleted(conn: Connection, source: str, stream: str, legacy_ids: Sequence[str], at: datetime) -> None:
    """The legacy records are gone: their crosswalk rows say since when."""
    t = migration_items
    for part in chunks(legacy_ids):
        conn.execute(update(t).where(t.c.source == source, t.c.stream == stream, t.c.legacy_id.in_(part))
                     .values(deleted_at=at))


# -- rejected rows -------------------------------------------------------------------------------

#: the longest legacy id a reject row keeps: a hostile export's id may be any length
_REJECT_ID_MAX = migration_rejects.c.legacy_id.type.length  # type: ignore[attr-defined]


def add_rejects(batch: Batch, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        ext = r.get("legacy_id")
        if ext is not None and len(ext) > _REJECT_ID_MAX:
            r["legacy_id"] = ext[:_REJECT_ID_MAX - 1] + "…"  # the reason and payload say the rest
    batch.insert_rows(migration_rejects, rows)


def clear_rejects(conn: Connection, wave: str, stream: str | None = None) -> None:
    t = migration_rejects
    q = delete(t).where(t.c.wave == wave)
    if stream is not None:
        q = q.where(t.c.stream == stream)
    conn.execute(q)


def reject_counts(conn: Connection, wave: str) -> dict[str, int]:
    t = migration_rejects
    q = select(t.c.stream, func.count()).where(t.c.wave == wave).group_by(t.c.stream)
    return {s: int(n) for s, n in conn.execute(q)}


def rejects(conn: Connection, wave: str, limit: int = 1000) -> list[dict[str, Any]]:
    t = migration_rejects
    q = select(t.c.stream, t.c.legacy_id, t.c.reason, t.c.pass_no).where(t.c.wave == wave).order_by(t.c.id)
    return [dict(r) for r in conn.execute(q.limit(limit)).mappings()]


# -- the change log of a wave's runs -------------------------------------------------------------

def run_ops(conn: Connection, entity: str, entity_ids: Sequence[str], run_id: int) -> dict[str, tuple[str, int]]:
    """entity id -> (the first op the run logged for it: create, link, update, reject; how many
    fields the ownership rules refused it)."""
    t = change_log
    out: dict[str, tuple[str, int]] = {}
    for part in parts(conn, list(entity_ids)):
        q = (select(t.c.entity_id, t.c.op, t.c.fields).where(
            t.c.entity == entity, among(conn, t.c.entity_id, part), t.c.run_id == run_id).order_by(t.c.seq))
        for eid, op, fields in conn.execute(q):
            refused = len((fields or {}).get("_rejected") or {})
            first = out.get(eid)
            out[eid] = (first[0], first[1] + refused) if first else (op, refused)
    return out


def wave_run_ids(conn: Connection, source: str, wave: str) -> list[int]:
    """The sync runs a wave made (run and delta), oldest first: they name the stream `<stream>@<wave>`."""
    q = (select(sync_runs.c.id).where(sync_runs.c.connector == source, sync_runs.c.stream.endswith(f"@{wave}", autoescape=True))
         .order_by(sync_runs.c.id))
    return [int(i) for i in conn.execute(q).scalars()]


def changes_for(conn: Connection, entity: str, entity_ids: Sequence[str], run_ids: Sequence[int] | None = None,
                after_run: int | None = None) -> list[dict[str, Any]]:
    """Change-log rows of these entities, in sequence order; only the given runs' when `run_ids`,
    only those after run id `after_run` (by anyone) when that is given."""
    t = change_log
    out: list[dict[str, Any]] = []
    for part in parts(conn, list(entity_ids)):
        cond = [t.c.entity == entity, among(conn, t.c.entity_id, part)]
        if run_ids is not None:
            cond.append(t.c.run_id.in_(list(run_ids)))
        q = select(t).where(and_(*cond)).order_by(t.c.seq)
        out.extend(dict(r) for r in conn.execute(q).mappings())
    out.sort(key=lambda r: r["seq"])
    return out


def held_ids(conn: Connection, source: str, stream: str, legacy_ids: Sequence[str]) -> dict[str, str]:
    """legacy id -> cut-over wave, for the ids among `legacy_ids` that `source` may no longer write
    (their wave is cut over: crm owns them). One query per page; the hook a plain sync needs."""
    i, w = migration_items, migration_waves
    out: dict[str, str] = {}
    for part in parts(conn, list(legacy_ids)):
        q = (select(i.c.legacy_id, i.c.wave).join(w, w.c.name == i.c.wave)
             .where(i.c.source == source, i.c.stream == stream, among(conn, i.c.legacy_id, part),
                    w.c.state == "cut_over"))
        out.update({str(a): str(b) for a, b in conn.execute(q)})
    return out
