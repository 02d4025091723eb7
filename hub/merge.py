"""Merging two canonical records found to be the same person (or company): nothing is dropped.

`merge_records(conn, rules, entity, survivor, duplicate)`:

- every field of the duplicate is replayed into the survivor as the claim its provenance
  records (system, vendor time), through the same ownership rules as a sync: the merged
  value of each field is the one the rules would have kept had both records always been one;
- the duplicate's external links move to the survivor, so every source keeps updating one
  record; references to the duplicate (contacts and opportunities of an account, activities
  and their participants) are re-pointed;
- the duplicate row stays, archived, with `custom.merged_into`; its change log stays under
  its id, and both records get a `merge` entry naming the other, so `crmhub explain` of the
  survivor shows the duplicate's history too.

`duplicates(conn, entity)` lists live records sharing a match key (hub.identity: email for
contacts and leads, domain for accounts) — the candidates `crmhub merge` is for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from hub.identity import lookup_key
from hub.ownership import Merger, Rules
from state import repos
from state.custom import referrers
from state.schema import (
    ENTITY_TABLES,
    activities,
    activity_participants,
    change_log,
    contacts,
    external_links,
    opportunities,
)

__all__ = ["MergeError", "duplicates", "merge_records", "merged_ids"]

#: tables whose column refers to an entity of this kind
_REFERRERS = {
    "account": [(contacts, "account_id"), (opportunities, "account_id"), (activities, "account_id")],
    "contact": [(activities, "contact_id"), (activity_participants, "contact_id")],
    "opportunity": [(activities, "opportunity_id")],
    "lead": [],
}
_NOT_FIELDS = {"id", "custom", "provenance", "archived_at"}


class MergeError(Exception):
    pass


def _load(conn: Connection, entity: str, eid: str) -> dict[str, Any]:
    t = ENTITY_TABLES[entity]
    row = conn.execute(select(t).where(t.c.id == eid)).mappings().first()
    if row is None:
        raise MergeError(f"no {entity} with id {eid!r}")
    return dict(row)


def _time(v: Any) -> datetime | None:
    if not isinstance(v, str):
        return None
    t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def merge_records(conn: Connection, rules: Rules, entity: str, survivor_id: str, duplicate_id: str,
                  now: datetime | None = None, by: str = "crm") -> dict[str, Any]:
    """Merge `duplicate_id` into `survivor_id` in the caller's transaction; returns what changed."""
    if entity not in ENTITY_TABLES:
        raise MergeError(f"unknown entity {entity!r}: use one of {', '.join(ENTITY_TABLES)}")
    if survivor_id == duplicate_id:
        raise MergeError("a record cannot be merged into itself")
    now = now or datetime.now(UTC)
    t = ENTITY_TABLES[entity]
    keep, dup = _load(conn, entity, survivor_id), _load(conn, entity, duplicate_id)
    if (dup.get("custom") or {}).get("merged_into"):
        raise MergeError(f"{entity} {duplicate_id} was merged into {dup['custom']['merged_into']} already")
    fields = [str(c.name) for c in t.c if c.name not in _NOT_FIELDS]  # str: orjson refuses quoted_name keys
    merger = Merger(rules, entity)
    values = {f: keep.get(f) for f in fields}
    prov: dict[str, Any] = dict(keep.get("provenance") or {})
    claims = {f: (p[0], _time(p[1])) for f, p in prov.items() if isinstance(p, list) and len(p) >= 2 and f[0] != "_"}
    dprov = dup.get("provenance") or {}
    # the duplicate's values grouped by the claim that set them: one merge per claim
    groups: dict[tuple[str, str | None], dict[str, Any]] = {}
    for f in fields:
        v = dup.get(f)
        if v in (None, ""):
            continue
        p = dprov.get(f)
        key = (p[0], p[1]) if isinstance(p, list) and len(p) >= 2 else ("crm", None)
        groups.setdefault(key, {})[f] = v
    changed: dict[str, list[Any]] = {}
    decisions: dict[str, Any] = {}
    for (system, at), incoming in sorted(groups.items(), key=lambda kv: (kv[0][1] or "", kv[0][0])):
        res = merger.merge(values, claims, incoming, system, _time(at))
        for d in res.decisions:
            if d.accepted:
                changed[d.field] = [values.get(d.field) if d.field not in changed else changed[d.field][0], d.new]
                decisions[d.field] = {"rule": d.rule, "reason": f"merged from {duplicate_id}: {d.reason}"}
        values.update(res.values)
        for f, claim in res.provenance.items():
            src = dprov.get(f) if isinstance(dprov.get(f), list) else None
            prov[f] = [claim[0], at, claim[2], src[3] if src and len(src) > 3 else None,
                       src[4] if src and len(src) > 4 else None]
            claims[f] = (claim[0], claim[1])
    custom = {**(dup.get("custom") or {}), **(keep.get("custom") or {})}
    if changed or custom != (keep.get("custom") or {}):
        conn.execute(update(t).where(t.c.id == survivor_id).values(
            **{f: v for f, (_o, v) in changed.items()}, custom=custom or None, provenance=prov))
    moved = conn.execute(update(external_links).where(
        external_links.c.entity == entity, external_links.c.entity_id == duplicate_id).values(
        entity_id=survivor_id)).rowcount or 0
    repointed = 0
    for table, col in [*_REFERRERS.get(entity, []), *referrers(entity)]:
        repointed += conn.execute(update(table).where(table.c[col] == duplicate_id).values(
            {col: survivor_id})).rowcount or 0
    conn.execute(update(t).where(t.c.id == duplicate_id).values(
        archived_at=now, custom={**(dup.get("custom") or {}), "merged_into": survivor_id}))
    fields_log: dict[str, Any] = {**changed, "_merged_from": duplicate_id, "_links_moved": moved}
    if decisions:
        fields_log["_accepted"] = decisions
    conn.execute(repos._insert(conn, change_log).values([
        {"entity": entity, "entity_id": survivor_id, "op": "merge", "source": by, "fields": fields_log,
         "vendor_at": None, "at": now, "run_id": None},
        {"entity": entity, "entity_id": duplicate_id, "op": "merged", "source": by,
         "fields": {"archived_at": [None, now], "_merged_into": survivor_id}, "vendor_at": None, "at": now,
         "run_id": None},
    ]))
    return {"entity": entity, "survivor": survivor_id, "duplicate": duplicate_id, "fields_changed": sorted(changed),
            "links_moved": moved, "references_repointed": repointed}


def merged_ids(conn: Connection, entity: str, eid: str) -> list[str]:
    """The records merged into `eid`, directly or through earlier merges (their histories are its)."""
    cl = change_log
    out: list[str] = []
    todo = [eid]
    while todo:
        cur = todo.pop()
        rows = conn.execute(select(cl.c.fields).where(cl.c.entity == entity, cl.c.entity_id == cur,
                                                      cl.c.op == "merge")).scalars()
        for f in rows:
            d = (f or {}).get("_merged_from")
            if d and d not in out and d != eid:
                out.append(d)
                todo.append(d)
    return out


def duplicates(conn: Connection, entity: str, limit: int = 100) -> list[dict[str, Any]]:
    """Groups of live records sharing their match key (oldest first in each group)."""
    lk = lookup_key(entity)
    if lk is None:
        return []
    key = lk.field
    t = ENTITY_TABLES[entity]
    col = func.lower(t.c[key])
    dup_keys = (select(col.label("k")).where(t.c.archived_at.is_(None), t.c[key].is_not(None), t.c[key] != "")
                .group_by(col).having(func.count() > 1).limit(limit).subquery())
    rows = conn.execute(select(col.label("k"), t.c.id, t.c.created_at).where(
        col.in_(select(dup_keys.c.k)), t.c.archived_at.is_(None)).order_by(col, t.c.created_at, t.c.id)).all()
    groups: dict[str, list[str]] = {}
    for k, eid, _c in rows:
        groups.setdefault(k, []).append(eid)
    return [{"key": key, "value": k, "ids": ids} for k, ids in groups.items()]

