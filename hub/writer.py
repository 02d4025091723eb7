"""Writes one page into the canonical store: the per-page bulk path of every sync.

For a page of N records it costs a fixed number of statements, whatever N is:
one link look-up, one load of the linked entities' current state, one reference
look-up per referenced entity, one upsert per table, one change-log insert.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table

from hub.mapping import MappedRecord, StreamMapping
from hub.sdk.types import RawRecord
from hub.transforms import MappingError, timestamp
from state import repos
from state.bulk import Batch
from state.schema import ENTITY_TABLES, activities, change_log, external_links

#: ids need uniqueness, not secrecy: the fast generator, not a syscall per id (os.urandom)
_random = random.Random()

#: referenced ids a run remembers at most (per referenced entity): ~100 bytes each
REF_CACHE_SIZE = 50_000

#: a value that means "leave the stored value as it is"
KEEP: Any = object()


def new_id() -> str:
    """A UUIDv7-style id: 48 bits of milliseconds, then 80 random bits, as 32 hex digits.

    Time-ordered ids land at the right edge of every index that holds them (the entity
    table's key, the links' and the change log's entity_id), instead of at random pages:
    fewer page splits and a hot, cached index tail during bulk loads.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_random.getrandbits(80):020x}"


@dataclass
class Prepared:
    """A page after mapping: what the database part of the write needs."""

    read: int = 0
    mapped: list[tuple[RawRecord, MappedRecord]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PageOutcome:
    read: int = 0
    written: int = 0  # entities created or changed
    deleted: int = 0
    failed: int = 0
    succeeded_ids: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


class PageWriter:
    """Maps and writes pages for one (connector instance, stream)."""

    def __init__(self, connector: str, stream: str, mapping: StreamMapping):
        self.connector = connector
        self.stream = stream
        self.mapping = mapping
        self.entity = mapping.target
        #: referenced entity -> {external id: canonical id}. A link, once made, keeps its canonical
        #: id, so a run can remember the ones it saw (a company is referenced by many contacts).
        #: A page that fails ends the run, so nothing uncommitted outlives it here.
        self._ref_cache: dict[str, dict[str, str]] = {}
        self.table = ENTITY_TABLES.get(self.entity)
        if self.table is not None:
            self.columns = [c for c in self.table.c]
            self.mapped_columns = [r.name for r in mapping.fields] + list(mapping.references)

    def tables(self) -> list[Table]:
        """The tables a page of this stream writes to."""
        own = [self.table] if self.table is not None else [activities]
        refs = [ENTITY_TABLES[e] for e, _g in self.mapping.references.values()]
        return [external_links, change_log, *own, *refs]

    # -- mapping ---------------------------------------------------------------------------------

    def prepare(self, records: list[RawRecord]) -> Prepared:
        """Map a page: pure CPU, no database, so the engine runs it ahead in the read thread."""
        prepared = Prepared(read=len(records))
        # a record may appear twice in a page (vendor replays); the last one wins
        if len({r.external_id for r in records}) != len(records):
            records = list({r.external_id: r for r in records}.values())
        for rec in records:
            try:
                prepared.mapped.append((rec, self.mapping.map(rec.data)))
            except (MappingError, TypeError, ValueError, AttributeError) as err:
                prepared.failures.append({"external_id": rec.external_id, "payload": rec.data,
                                          "reason": f"mapping failed: {err}"})
        return prepared

    # -- writing ---------------------------------------------------------------------------------

    def write(self, batch: Batch, prepared: Prepared, deleted: list[str], now: datetime,
              run_id: int | None) -> PageOutcome:
        """Read what the page needs at once; queue its writes on `batch` (the caller flushes)."""
        conn = batch.conn
        outcome = PageOutcome(read=prepared.read, failures=list(prepared.failures))
        mapped = prepared.mapped
        changes: list[dict[str, Any]] = []
        if self.table is not None:
            self._write_entities(batch, mapped, now, run_id, changes, outcome)
        else:
            batch.flush()
            self._write_activities(conn, mapped, now, outcome)
        if deleted:
            batch.flush()  # a delete must see the links this page created
            self._delete(conn, deleted, now, run_id, changes, outcome)
        repos.append_changes(batch, changes)
        outcome.failed = len(outcome.failures)
        return outcome

    def _resolve_refs(self, batch: Batch, mapped: list[tuple[RawRecord, MappedRecord]], now: datetime,
                      run_id: int | None, changes: list[dict[str, Any]]) -> None:
        """Replace referenced external ids with canonical ids; unknown ones get a stub entity.

        The stub keeps the page order-independent: a contact may arrive before its company,
        and the company's own sync later fills the stub through the same link.
        """
        for field_name, (entity, _get) in self.mapping.references.items():
            wanted = sorted({m.refs[field_name] for _r, m in mapped if field_name in m.refs})
            if not wanted:
                for _r, m in mapped:
                    m.values[field_name] = KEEP
                continue
            cache = self._ref_cache.setdefault(entity, {})
            found = {ext: cache[ext] for ext in wanted if ext in cache}
            unknown = [ext for ext in wanted if ext not in found]
            if unknown:
                found.update((ext, eid) for ext, (eid, _d) in
                             repos.lookup_links(batch.conn, self.connector, entity, unknown).items())
            missing = [ext for ext in unknown if ext not in found]
            if missing:
                stubs = []
                links = []
                for ext in missing:
                    eid = found[ext] = new_id()
                    stubs.append({"id": eid})
                    links.append({"connector": self.connector, "entity": entity, "external_id": ext,
                                  "entity_id": eid, "stream": None, "linked_at": now})
                    changes.append({"entity": entity, "entity_id": eid, "op": "create", "source": self.connector,
                                    "fields": {}, "vendor_at": None, "at": now, "run_id": run_id})
                repos.insert_entities(batch, ENTITY_TABLES[entity], stubs)
                repos.insert_links(batch, links)
            if len(cache) > REF_CACHE_SIZE:
                cache.clear()
            cache.update(found)
            for _r, m in mapped:
                ref = m.refs.get(field_name)
                # a record that does not carry the reference (a search result without
                # associations) keeps the stored value rather than erasing it
                m.values[field_name] = found[ref] if ref is not None else KEEP

    def _write_entities(self, batch: Batch, mapped: list[tuple[RawRecord, MappedRecord]], now: datetime,
                        run_id: int | None, changes: list[dict[str, Any]], outcome: PageOutcome) -> None:
        assert self.table is not None
        if not mapped:
            return
        ext_ids = [r.external_id for r, _m in mapped]
        conn = batch.conn
        links = repos.lookup_links(conn, self.connector, self.entity, ext_ids)
        current = repos.load_entities(conn, self.table, [eid for eid, _d in links.values()])
        if self.mapping.references:
            self._resolve_refs(batch, mapped, now, run_id, changes)
        rows: list[dict[str, Any]] = []  # changed entities
        created: list[dict[str, Any]] = []  # new entities: a plain INSERT, no conflict to check
        new_links: list[dict[str, Any]] = []
        revived: list[str] = []
        for rec, m in mapped:
            values = m.values
            values["archived_at"] = None
            link = links.get(rec.external_id)
            vendor_at = timestamp(rec.updated_at) if rec.updated_at else None
            old = current.get(link[0], {}) if link is not None else {}
            for k, v in values.items():
                if v is KEEP:
                    values[k] = old.get(k)
            if link is None:
                eid = new_id()
                new_links.append({"connector": self.connector, "entity": self.entity, "external_id": rec.external_id,
                                  "entity_id": eid, "stream": self.stream, "linked_at": now})
                diff = {k: [None, v] for k, v in values.items() if v is not None}
                op = "create"
                old_custom = None
            else:
                eid, link_deleted = link
                if link_deleted is not None:
                    revived.append(rec.external_id)
                diff = {k: [old.get(k), v] for k, v in values.items() if old.get(k) != v}
                op = "update"
                old_custom = old.get("custom")
            custom = old_custom
            if m.custom is not None:
                merged = {**(old_custom or {}), **m.custom}
                if merged != old_custom:
                    diff["custom"] = [old_custom, merged]
                    custom = merged
            outcome.succeeded_ids.append(rec.external_id)
            if not diff and link is not None:
                continue
            (rows if link is not None else created).append({"id": eid, **values, "custom": custom})
            changes.append({"entity": self.entity, "entity_id": eid, "op": op, "source": self.connector,
                            "fields": diff, "vendor_at": vendor_at, "at": now, "run_id": run_id})
        repos.insert_entities(batch, self.table, created)
        repos.upsert_entities(batch, self.table, rows, [*self.mapped_columns, "archived_at", "custom"])
        repos.insert_links(batch, new_links)
        if revived:
            repos.set_links_deleted(conn, self.connector, self.entity, revived, None)
        outcome.written += len(rows) + len(created)

    def _write_activities(self, conn: Connection, mapped: list[tuple[RawRecord, MappedRecord]], now: datetime,
                          outcome: PageOutcome) -> None:
        rows = []
        for rec, m in mapped:
            v = m.values
            occurred = v.get("occurred_at") or (timestamp(rec.updated_at) if rec.updated_at else None)
            if occurred is None:
                outcome.failures.append({"external_id": rec.external_id, "payload": rec.data,
                                         "reason": "activity has no occurred_at"})
                continue
            rows.append({"id": new_id(), "type": v.get("type") or self.stream, "source": self.connector,
                         "external_id": rec.external_id, "account_id": v.get("account_id"),
                         "contact_id": v.get("contact_id"), "opportunity_id": v.get("opportunity_id"),
                         "actor_id": v.get("actor_id"), "occurred_at": occurred,
                         "payload": m.custom or rec.data, "recorded_at": now})
            outcome.succeeded_ids.append(rec.external_id)
        if rows:
            stmt = repos._insert(conn, activities).on_conflict_do_nothing(
                index_elements=[activities.c.source, activities.c.external_id])
            res = conn.execute(stmt, rows)
            outcome.written += max(res.rowcount, 0)

    def _delete(self, conn: Connection, deleted: list[str], now: datetime, run_id: int | None,
                changes: list[dict[str, Any]], outcome: PageOutcome) -> None:
        """Unlink this source; archive the entity only when no other system still links it."""
        links = repos.lookup_links(conn, self.connector, self.entity, deleted)
        live = {ext: eid for ext, (eid, d) in links.items() if d is None}
        if not live:
            return
        repos.set_links_deleted(conn, self.connector, self.entity, list(live), now)
        if self.table is None:
            return
        ids = list(live.values())
        keep = repos.live_links_elsewhere(conn, self.entity, ids, self.connector)
        gone = [i for i in ids if i not in keep]
        repos.archive_entities(conn, self.table, gone, now)
        for eid in ids:
            changes.append({"entity": self.entity, "entity_id": eid, "op": "unlink" if eid in keep else "archive",
                            "source": self.connector, "fields": {"archived_at": [None, now]} if eid not in keep else {},
                            "vendor_at": None, "at": now, "run_id": run_id})
        outcome.deleted += len(live)
