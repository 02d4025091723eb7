"""Roll a wave back: remove what it created, restore what it changed, leave other waves alone.

From the crosswalk (hub.migration_items) and the change log of the wave's runs:

- a record the wave **created** is deleted, with its links;
- a record the wave **matched** (linked to a record already in the CRM) or **updated** (linked
  before the wave) gets back, field by field, the value it had before the wave's first change
  (the `old` side of the earliest change-log row of the wave's runs); a matched record loses
  the source's link, so a new run matches it again.

It does not undo a field another system or a CRM user changed since: such a field's provenance
names another system, or its value differs from the last one the wave wrote. Those are listed
(`conflicts`) and nothing is changed unless `force` is given, which undoes them too (a record
the wave created is then deleted whatever was added to it). A restored field's provenance entry
is removed (the claim that set the old value is not kept by the change log): it reads as unknown,
the weakest claim, until a system writes it again.

Children go first (opportunities and contacts before accounts), one transaction per page of
crosswalk rows, so a killed rollback goes on where it stopped when run again. The wave is then
`rolled_back` and can be run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, update

from hub.migrate.checksum import checksum, norm
from hub.migrate.run import acquire_wave_lease, wave_worker
from hub.migrate.waves import MigrateError, StreamPlan, load_wave
from state import migration_repo as mrepo
from state import repos
from state.bulk import Batch
from state.schema import ENTITY_TABLES, cursors, external_links

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["RollbackReport", "rollback"]

PAGE = 1000


@dataclass
class RollbackReport:
    wave: str
    applied: bool = False
    deleted: int = 0
    restored: int = 0  # records whose fields were restored
    unlinked: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    conflict_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(UTC)


def rollback(hub: Hub, wave: str, *, force: bool = False, clock: Callable[[], datetime] = _now,
             max_listed: int = 200) -> RollbackReport:
    w = load_wave(hub, wave)
    rep = RollbackReport(w.name)
    lease, worker = f"migrate:{w.name}", wave_worker()
    ttl = timedelta(seconds=hub.cfg.sync.lease_ttl_seconds)
    with hub.db.connect() as conn:
        with conn.begin():  # a run or delta of the wave must not write while it is undone
            if not acquire_wave_lease(conn, lease, worker, clock(), ttl):
                holder = repos.lease_holder(conn, lease) or {}
                raise MigrateError(f"wave {w.name} is being migrated by {holder.get('owner')} "
                                   f"(lease until {holder.get('expires_at')}): roll it back when that ends")
        try:
            return _rollback(conn, w, rep, force, clock, max_listed, lease, worker, ttl)
        finally:
            with conn.begin():
                repos.release_lease(conn, lease, worker)


def _rollback(conn: Connection, w: Any, rep: RollbackReport, force: bool, clock: Callable[[], datetime],
              max_listed: int, lease: str, worker: str, ttl: timedelta) -> RollbackReport:
    def renew() -> None:
        if not repos.renew_lease(conn, lease, worker, clock(), ttl):
            raise MigrateError(f"the lease of wave {w.name} was lost to another worker; the rollback stopped "
                               "(run it again: it continues)")

    with conn.begin():
        row = mrepo.get_wave(conn, w.name)
        if row is None:
            raise MigrateError(f"wave {w.name} was never run: nothing to roll back")
        if row["state"] == "cut_over" and not force:
            raise MigrateError(f"wave {w.name} is cut over: crm owns its records. Fix: --force to roll it "
                               "back anyway")
        run_ids = mrepo.wave_run_ids(conn, w.source, w.name)
    streams = list(reversed(w.streams))  # children first
    # pass 1: find what others changed since (read only)
    for sp in streams:
        for items in _pages(conn, w.name, sp.name):
            with conn.begin():
                renew()
                _plan_page(conn, w.source, sp, items, run_ids, rep, max_listed, apply=False, force=False,
                           wave=w.name, now=clock())
    if rep.conflict_count and not force:
        return rep
    # pass 2: apply, page by page
    with conn.begin():
        mrepo.save_wave(conn, w.name, clock(), state="rolling_back")
    rep.conflicts, rep.conflict_count = ([], 0) if not force else (rep.conflicts, rep.conflict_count)
    for sp in streams:
        while True:
            with conn.begin():  # a lost lease rolls this page back with the renewal
                renew()
                items = mrepo.page_items(conn, w.name, sp.name, None, PAGE, w.source)
                if not items:
                    break
                _plan_page(conn, w.source, sp, items, run_ids, rep, max_listed, apply=True, force=force,
                           wave=w.name, now=clock())
                mrepo.delete_items(conn, w.source, sp.name, [it["legacy_id"] for it in items])
    with conn.begin():
        mrepo.clear_rejects(conn, w.name)
        conn.execute(delete(cursors).where(cursors.c.connector == w.cursor_owner))
        mrepo.save_wave(conn, w.name, clock(), state="rolled_back", cutover_at=None, last_verify_ok=None)
    rep.applied = True
    return rep


def _pages(conn: Connection, wave: str, stream: str) -> Any:
    after = None
    while True:
        with conn.begin():
            items = mrepo.page_items(conn, wave, stream, after, PAGE)
        if not items:
            return
        yield items
        after = items[-1]["legacy_id"]


def _plan_page(conn: Connection, source: str, sp: StreamPlan, items: list[dict[str, Any]], run_ids: list[int],
               rep: RollbackReport, max_listed: int, *, apply: bool, force: bool, wave: str, now: datetime) -> None:
    table = ENTITY_TABLES.get(sp.target)
    if table is None:
        return  # activities are append-only history: a rollback leaves them (documented)
    entity = sp.target
    eids = [it["entity_id"] for it in items]
    rows = repos.load_entities(conn, table, eids)
    changes = mrepo.changes_for(conn, entity, eids, run_ids)
    first_old: dict[str, dict[str, Any]] = {}
    last_new: dict[str, dict[str, Any]] = {}
    for c in changes:
        for f, v in (c["fields"] or {}).items():
            if f.startswith("_") or not isinstance(v, list) or len(v) != 2:
                continue
            first_old.setdefault(c["entity_id"], {}).setdefault(f, v[0])
            last_new.setdefault(c["entity_id"], {})[f] = v[1]
    others = _other_links(conn, entity, eids, source)
    log: list[dict[str, Any]] = []
    gone: list[str] = []
    unlink: list[str] = []
    for it in items:
        eid = it["entity_id"]
        row = rows.get(eid)
        if row is None:
            continue
        prov = row.get("provenance") or {}
        conflicts = []
        if it["action"] == "created":
            for f in sp.fields + ([sp.ref_field] if sp.ref_field else []):
                p = prov.get(f)
                if isinstance(p, list) and p and p[0] != source and row.get(f) is not None:
                    conflicts.append({"field": f, "by": p[0], "value": row.get(f)})
            for other in sorted(others.get(eid, ())):
                conflicts.append({"field": None, "by": other, "value": "linked since"})
            if not conflicts and checksum(row, sp.fields) != it["checksum"]:
                conflicts.append({"field": None, "by": "unknown", "value": "changed since the wave wrote it"})
        else:
            for f, new in last_new.get(eid, {}).items():
                p = prov.get(f)
                by = p[0] if isinstance(p, list) and p else None
                if by not in (None, source) or norm(row.get(f)) != norm(_revive(new, row.get(f))):
                    conflicts.append({"field": f, "by": by or "unknown (value differs)", "value": row.get(f)})
        if conflicts:
            rep.conflict_count += 1
            if len(rep.conflicts) < max_listed:
                rep.conflicts.append({"stream": sp.name, "legacy_id": it["legacy_id"], "entity_id": eid,
                                      "action": it["action"], "fields": conflicts})
        if not apply:
            continue
        if it["action"] == "created":
            gone.append(eid)
            log.append({"entity": entity, "entity_id": eid, "op": "delete", "source": f"migrate.{wave}",
                        "fields": {"_reason": f"rollback of wave {wave}"}, "vendor_at": None, "at": now,
                        "run_id": None})
            continue
        restore: dict[str, Any] = {}
        skipped = {c["field"] for c in conflicts} if not force else set()
        for f, old in first_old.get(eid, {}).items():
            if f in skipped or f not in table.c:
                continue
            restore[f] = _revive(old, row.get(f))
        if restore:
            prov = dict(prov)
            for f in restore:
                prov.pop(f, None)
            seen = dict(prov.get("_seen") or {})
            seen.pop(source, None)
            prov["_seen"] = seen
            conn.execute(update(table).where(table.c.id == eid).values(**restore, provenance=prov))
            rep.restored += 1
            log.append({"entity": entity, "entity_id": eid, "op": "update", "source": f"migrate.{wave}",
                        "fields": {**{f: [row.get(f), v] for f, v in restore.items()},
                                   "_reason": f"rollback of wave {wave}"}, "vendor_at": None, "at": now,
                        "run_id": None})
        if it["action"] == "matched":
            unlink.append(it["legacy_id"])
    if not apply:
        return
    if gone:
        for part in repos.chunks(gone):
            conn.execute(delete(table).where(table.c.id.in_(part)))
            cond = [external_links.c.entity == entity, external_links.c.entity_id.in_(part)]
            if not force:
                cond.append(external_links.c.connector == source)
            conn.execute(delete(external_links).where(*cond))
        rep.deleted += len(gone)
    if unlink:
        for part in repos.chunks(unlink):
            conn.execute(delete(external_links).where(external_links.c.connector == source,
                                                      external_links.c.entity == entity,
                                                      external_links.c.external_id.in_(part)))
        rep.unlinked += len(unlink)
    batch = Batch(conn)
    repos.append_changes(batch, log)
    batch.flush()


def _revive(logged: Any, like: Any) -> Any:
    """A change-log value (JSON: times and decimals as text) as the column's type, like `like`."""
    if logged is None or like is None or isinstance(logged, type(like)):
        return logged
    from decimal import Decimal

    if isinstance(like, datetime):
        d = datetime.fromisoformat(str(logged))
        return d if d.tzinfo else d.replace(tzinfo=UTC)
    if isinstance(like, Decimal):
        return Decimal(str(logged))
    if hasattr(like, "isoformat"):
        from datetime import date

        return date.fromisoformat(str(logged)[:10])
    return logged


def _other_links(conn: Connection, entity: str, eids: list[str], source: str) -> dict[str, set[str]]:
    """entity id -> the other systems with a live link to it."""
    systems = repos.linked_systems(conn, entity, eids)
    return {eid: s - {source} for eid, s in systems.items() if s - {source}}
