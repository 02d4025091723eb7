"""Writes one page into the canonical store: the per-page bulk path of every sync.

For a page of N records it costs a fixed number of statements, whatever N is:
one link look-up, one load of the linked entities' current state (with their
provenance), one identity look-up for the records without a link (hub.identity),
one reference look-up per referenced entity, one insert or upsert per table, one
change-log insert. Between the reads and the writes, each record is merged field
by field under the ownership rules (hub.ownership), in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table

from hub.activities import RETRY_MARK, ActivityIngest, event_from_values
from hub.identity import IdentityKeys, PageIdentity
from hub.ids import new_id
from hub.mapping import MappedRecord, StreamMapping
from hub.ownership import Merger, Rules, delete_outcome, load_default_rules
from hub.routing import SYSTEM as ROUTING
from hub.routing import Router, assignment_activities
from hub.sdk.activity import ActivityEvent, Participant
from hub.sdk.types import RawRecord
from hub.transforms import MappingError, timestamp
from state import repos
from state.bulk import Batch
from state.schema import (
    ENTITY_TABLES,
    activities,
    activity_participants,
    activity_versions,
    change_log,
    external_links,
)

#: referenced ids a run remembers at most (per referenced entity): ~100 bytes each
REF_CACHE_SIZE = 50_000

#: records merged between two sends of a page's entity writes (PostgreSQL executes one part while
#: the next is merged)
SEND_EVERY = 250

#: a value that means "leave the stored value as it is"
KEEP: Any = object()

_parse_time = datetime.fromisoformat


def _iso(t: datetime | None) -> str | None:
    """A time as provenance stores it: ISO-8601, UTC, milliseconds (`2026-01-01T00:00:00.000Z`)."""
    if t is None:
        return None
    if t.utcoffset():
        t = t.astimezone(UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


@dataclass
class Prepared:
    """A page after mapping: what the database part of the write needs."""

    read: int = 0
    mapped: list[tuple[RawRecord, MappedRecord]] = field(default_factory=list)
    #: each mapped record's vendor-side change time (parsed once, in the read thread) ...
    times: list[datetime | None] = field(default_factory=list)
    #: ... and as provenance stores it (the vendor's own ISO-8601 UTC text, per the SDK contract)
    isos: list[str | None] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: an activity stream's events (hub.activities), built by the connector or from the mapping,
    #: normalised ahead in the read thread
    events: list[Any] = field(default_factory=list)
    #: the raw record each event came from (a page is filtered by record, as in a migration wave)
    event_ids: list[str] = field(default_factory=list)


class _Entity:
    """One canonical entity a page touches: its row (updated in place), its provenance as
    stored (`values["provenance"]`: JSON, times as ISO strings) and as the Merger reads it
    (`claims`: field -> (system, vendor_at datetime))."""

    __slots__ = ("claims", "dirty", "new", "prov", "values")

    def __init__(self, values: dict[str, Any], prov: dict[str, Any], claims: dict[str, Any], new: bool):
        self.values = values
        self.prov = prov
        self.claims = claims
        self.new = new
        self.dirty = False


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

    def __init__(self, connector: str, stream: str, mapping: StreamMapping, rules: Rules | None = None,
                 internal: Sequence[str] = (), router: Router | None = None,
                 hold: Callable[[Connection, list[str]], dict[str, str]] | None = None):
        self.connector = connector
        self.stream = stream
        self.mapping = mapping
        #: external ids this source may no longer write -> why (a migration wave cut over to `crm`)
        self.hold = hold
        self.entity = mapping.target
        #: per-field source of truth (crmhub.yaml `ownership:` over mappings/ownership.yaml)
        self.rules = rules if rules is not None else load_default_rules()
        #: referenced entity -> {external id: canonical id}. A link, once made, keeps its canonical
        #: id, so a run can remember the ones it saw (a company is referenced by many contacts).
        #: A page that fails ends the run, so nothing uncommitted outlives it here.
        self._ref_cache: dict[str, dict[str, str]] = {}
        self.table = ENTITY_TABLES.get(self.entity)
        self.merger: Merger | None = None
        self.identity: IdentityKeys | None = None
        if self.table is not None:
            self.columns = [c for c in self.table.c]
            self.mapped_columns = [r.name for r in mapping.fields] + list(mapping.references)
            #: what a page writes of an entity: its mapped columns and the hub's own
            self.write_columns = ["id", *self.mapped_columns, "archived_at", "custom", "provenance"]
            #: (field, most characters its column holds): a longer value is the record's failure,
            #: not the page's (PostgreSQL would refuse the whole statement)
            self.limits = [(f.name, n) for f in mapping.fields
                           if (n := getattr(self.table.c[f.name].type, "length", None))]
            #: lead routing (hub.routing) for the records this stream creates without an owner
            self.router = router if router is not None and router.chain(self.entity) else None
            if self.router is not None and "owner_id" not in self.write_columns:
                self.write_columns.insert(1, "owner_id")
            self.merger = Merger(self.rules, self.entity)
            self.identity = IdentityKeys.for_entity(self.entity, self.table)
        #: activity streams go through the shared activity ingest; `internal`: the instance's own users
        self.ingest = ActivityIngest(connector, internal) if self.entity == "activity" else None

    def tables(self) -> list[Table]:
        """The tables a page of this stream writes to."""
        own = [self.table] if self.table is not None else [activities, activity_participants, activity_versions]
        refs = [ENTITY_TABLES[e] for e, _g in self.mapping.references.values()]
        return [external_links, change_log, *own, *refs]

    # -- mapping ---------------------------------------------------------------------------------

    def prepare(self, records: list[RawRecord]) -> Prepared:
        """Map a page: pure CPU, no database, so the engine runs it ahead in the read thread."""
        prepared = Prepared(read=len(records))
        # a record may appear twice in a page (vendor replays); the last one wins
        if len({r.external_id for r in records}) != len(records):
            records = list({r.external_id: r for r in records}.values())
        if self.ingest is not None:
            return self._prepare_events(records, prepared)
        limits = self.limits
        for rec in records:
            try:
                m = self.mapping.map(rec.data)
                u = rec.updated_at
                at = timestamp(u) if u else None
                for f, n in limits:
                    v = m.values.get(f)
                    if v.__class__ is str and len(v) > n:
                        raise MappingError(f"{f} is {len(v)} characters long; {self.entity}.{f} holds at most {n}")
                if len(rec.external_id) > repos.ID_MAX:
                    raise MappingError(f"the record's id is {len(rec.external_id)} characters long; the hub keeps "
                                       f"ids of at most {repos.ID_MAX}")
            except (MappingError, TypeError, ValueError, AttributeError) as err:
                prepared.failures.append({"external_id": rec.external_id, "payload": rec.data,
                                          "reason": f"mapping failed: {err}"})
                continue
            prepared.mapped.append((rec, m))
            prepared.times.append(at)
            # the vendor's text as is when it is ISO-8601 (it parses back to `at`), else ours
            prepared.isos.append(u if u.__class__ is str and not u.isdigit() else _iso(at))
        return prepared

    def _prepare_events(self, records: list[RawRecord], prepared: Prepared) -> Prepared:
        for rec in records:
            try:
                if rec.activity is not None:
                    ev = rec.activity
                elif RETRY_MARK in rec.data:  # a queued activity, replayed
                    d = dict(rec.data[RETRY_MARK])
                    d["participants"] = [Participant(**p) for p in d.get("participants") or []]
                    ev = ActivityEvent(**d)
                else:
                    m = self.mapping.map(rec.data)
                    ev = event_from_values(rec.external_id, m.values, m.refs, self.stream, rec.updated_at)
                    if m.custom:
                        ev.details.update(m.custom)
            except (MappingError, TypeError, ValueError, AttributeError) as err:
                prepared.failures.append({"external_id": rec.external_id, "payload": rec.data,
                                          "reason": f"mapping failed: {err}"})
                continue
            assert self.ingest is not None
            n = self.ingest.prepare(ev)
            if isinstance(n, dict):
                prepared.failures.append(n)
            else:
                prepared.events.append(n)
                prepared.event_ids.append(rec.external_id)
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
            try:
                self._write_entities(batch, mapped, prepared.times, prepared.isos, now, run_id, changes, outcome)
            except BaseException:
                batch.abandon()  # out of pipeline mode before the caller rolls the page back
                raise
        else:
            assert self.ingest is not None
            got = self.ingest.write(batch, prepared.events, deleted, now)
            outcome.written += got.written
            outcome.deleted += len(deleted)
            outcome.succeeded_ids.extend(got.succeeded_ids)
            outcome.failures.extend(got.failures)
            deleted = []
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

    def _entity(self, eid: str, row: dict[str, Any] | None, parsed: dict[str, datetime | None]) -> _Entity:
        """A stored row as page state; its provenance's claims as the Merger reads them (a
        vendor time is parsed once per page, however many fields and rows share it)."""
        if row is None:  # linked, but the row is gone: the upsert writes it again
            row = {"id": eid}
        prov = row.get("provenance")
        claims: dict[str, tuple[str, datetime | None]] = {}
        if not isinstance(prov, dict):
            prov = {}
        else:
            for f, p in prov.items():
                if f[0] == "_" or not isinstance(p, list) or len(p) < 2:
                    continue  # not a field; or unreadable: an unknown claim, the weakest
                t = p[1]
                d = parsed.get(t, parsed) if t is not None else None
                if d is parsed:
                    d = parsed[t] = _parse_time(t)
                claims[f] = (p[0], d)  # type: ignore[assignment]
        row["provenance"] = prov
        return _Entity(row, prov, claims, False)

    def _write_entities(self, batch: Batch, mapped: list[tuple[RawRecord, MappedRecord]],
                        times: list[datetime | None], isos: list[str | None], now: datetime, run_id: int | None,
                        changes: list[dict[str, Any]], outcome: PageOutcome) -> None:
        """Link or match each record, merge it field by field under the ownership rules, and
        queue one insert (new entities), one upsert (changed ones), one link insert and one
        change-log row per record that changed or was refused something."""
        assert self.table is not None and self.merger is not None
        if not mapped:
            return
        conn = batch.conn
        connector, entity = self.connector, self.entity
        if self.hold is not None:
            mapped, times, isos = self._drop_held(conn, mapped, times, isos, now, run_id, changes, outcome)
            if not mapped:
                return
        links = repos.lookup_links(conn, connector, entity, [r.external_id for r, _m in mapped])
        current = repos.load_entities(conn, self.table, list({eid for eid, _d in links.values()}))
        if self.mapping.references:
            self._resolve_refs(batch, mapped, now, run_id, changes)
        page: PageIdentity | None = None
        if self.identity is not None:
            unlinked = [m.values for r, m in mapped if r.external_id not in links]
            if unlinked:
                page = self.identity.load(conn, unlinked)
        merge, first = self.merger.merge, self.merger.first
        keys = self.identity.fields if self.identity is not None else frozenset()
        parsed: dict[str, datetime | None] = {}
        now_iso = _iso(now)
        ents: dict[str, _Entity] = {}
        new_links: list[dict[str, Any]] = []
        revived: list[str] = []
        written: set[str] = set()
        # Routing reads the database for the page's new records as a whole: then one send at the end.
        every = SEND_EVERY if self.router is None else 0
        for i, ((rec, m), vendor_at, vendor_iso) in enumerate(zip(mapped, times, isos, strict=True)):
            if every and i and not i % every:
                self._send(batch, ents, new_links, written)
            ext = rec.external_id
            link = links.get(ext)
            note = None
            fresh = False  # an entity this page had not touched yet, and not yet matchable
            if link is not None:
                eid, link_deleted = link
                if link_deleted is not None:
                    revived.append(ext)
                st = ents.get(eid)
                if st is None:
                    st = ents[eid] = self._entity(eid, current.get(eid), parsed)
                    fresh = True
                op = "update"
            else:
                found = page.match(m.values) if page is not None else None
                if found is None:
                    eid = new_id()
                    prov: dict[str, Any] = {}
                    st = ents[eid] = _Entity({"id": eid, "provenance": prov}, prov, {}, True)
                    op = "create"
                    fresh = True
                else:
                    eid, note = found
                    st = ents.get(eid)
                    if st is None:
                        assert page is not None
                        st = ents[eid] = self._entity(eid, page.loaded.get(eid), parsed)
                    op = "link"
                new_links.append({"connector": connector, "entity": entity, "external_id": ext,
                                  "entity_id": eid, "stream": self.stream, "linked_at": now})
            values, prov = st.values, st.prov
            incoming = {k: v for k, v in m.values.items() if v is not KEEP}
            fields: dict[str, Any]
            why: dict[str, Any] | None = None
            rejected: dict[str, Any] | None = None
            if op == "create":  # every value is new: no comparisons, no accepted decisions to note
                res = first(incoming, connector, vendor_at)
                fields = {f: [None, v] for f, v in res.values.items()}
                for d in res.decisions:
                    if rejected is None:
                        rejected = {}
                    rejected[d.field] = {"value": d.new, "rule": d.rule, "reason": d.reason}
            else:
                res = merge(values, st.claims, incoming, connector, vendor_at)
                fields = {}
                # a record seen before at this vendor time (a re-read, a replayed page) was
                # decided then: its refusals are not logged twice
                replay = False
                seen = prov.get("_seen")
                if seen and vendor_at is not None:
                    last = seen.get(connector)
                    if last is not None and last[0] == ext and last[1] is not None:
                        t = parsed.get(last[1], parsed)
                        if t is parsed:
                            t = parsed[last[1]] = _parse_time(last[1])
                        replay = vendor_at <= t  # type: ignore[operator]
                for d in res.decisions:
                    if d.accepted:
                        fields[d.field] = [d.old, d.new]
                        if why is None:
                            why = {}
                        why[d.field] = {"rule": d.rule, "reason": d.reason}
                    elif not replay:
                        if rejected is None:
                            rejected = {}
                        rejected[d.field] = {"value": d.new, "rule": d.rule, "reason": d.reason}
            if res.values:
                values.update(res.values)
                st.dirty = True
            if res.provenance:
                claims = st.claims
                entries: dict[int, list[Any]] = {}  # one list per claim: fields decided alike share it
                for f, claim in res.provenance.items():
                    e = entries.get(id(claim))
                    if e is None:
                        at = claim[1]
                        iso = vendor_iso if at is vendor_at else _iso(at)
                        e = entries[id(claim)] = [claim[0], iso, claim[2], now_iso, ext]
                    prov[f] = e
                    claims[f] = claim
                st.dirty = True
            if values.get("archived_at") is not None:  # a live record of a linked source revives it
                fields["archived_at"] = [values["archived_at"], None]
                values["archived_at"] = None
                st.dirty = True
            if m.custom is not None:
                old_custom = values.get("custom")
                custom = {**(old_custom or {}), **m.custom}
                if custom != old_custom:
                    fields["custom"] = [old_custom, custom]
                    values["custom"] = custom
                    st.dirty = True
            if st.dirty or rejected:
                # the version of this record decided last: a re-read of it (a resumed or full
                # sync) decides nothing new, and its refusals are not logged again
                seen = prov.get("_seen")
                if seen is None:
                    seen = prov["_seen"] = {}
                seen[connector] = [ext, vendor_iso]
                st.dirty = True
            if page is not None and (fresh or not keys.isdisjoint(res.values)):
                page.add(values)
            outcome.succeeded_ids.append(ext)
            if op == "update" and not fields:
                if not rejected:
                    continue  # nothing changed, nothing refused
                op = "reject"  # only refusals: nothing for change-data consumers to apply
            if why:
                fields["_accepted"] = why
            if rejected:
                fields["_rejected"] = rejected
            if note:
                fields["_match"] = note
            changes.append({"entity": entity, "entity_id": eid, "op": op, "source": connector,
                            "fields": fields, "vendor_at": vendor_at, "at": now, "run_id": run_id})
        if self.router is not None:
            self._route(batch, ents, now, run_id, changes)
        self._send(batch, ents, new_links, written, last=True)
        if revived:
            repos.set_links_deleted(conn, connector, entity, revived, None)
        outcome.written += len(written)

    def _send(self, batch: Batch, ents: dict[str, _Entity], new_links: list[dict[str, Any]], written: set[str],
              last: bool = False) -> None:
        """Queue the entities and links decided so far, and (but for the last part) send them: the
        server writes them while the page's next records are merged. One transaction still."""
        assert self.table is not None
        cols = self.write_columns
        created, rows = [], []
        for eid, st in ents.items():
            if st.new:
                created.append({c: st.values.get(c) for c in cols})
            elif st.dirty:
                rows.append({c: st.values.get(c) for c in cols})
            else:
                continue
            st.new = st.dirty = False  # written: a later record of the page upserts it again
            written.add(eid)
        repos.insert_entities(batch, self.table, created)
        repos.upsert_entities(batch, self.table, rows, cols)
        repos.insert_links(batch, new_links)
        new_links.clear()
        if not last:
            batch.send()

    def _drop_held(self, conn: Connection, mapped: list[tuple[RawRecord, MappedRecord]], times: list[datetime | None],
                   isos: list[str | None], now: datetime, run_id: int | None, changes: list[dict[str, Any]],
                   outcome: PageOutcome) -> tuple[list[tuple[RawRecord, MappedRecord]], list[datetime | None],
                                                  list[str | None]]:
        """Records whose migration wave is cut over belong to `crm` now: refused, with a reason."""
        assert self.hold is not None
        held = self.hold(conn, [r.external_id for r, _m in mapped])
        if not held:
            return mapped, times, isos
        links = repos.lookup_links(conn, self.connector, self.entity, list(held))
        keep = [i for i, (r, _m) in enumerate(mapped) if r.external_id not in held]
        for r, _m in mapped:
            ext = r.external_id
            if ext in held:
                outcome.succeeded_ids.append(ext)
                if ext in links:
                    changes.append({"entity": self.entity, "entity_id": links[ext][0], "op": "reject",
                                    "source": self.connector, "vendor_at": None, "at": now, "run_id": run_id,
                                    "fields": {"_rejected": {"*": {"rule": "cutover", "reason":
                                               f"wave {held[ext]} is cut over: crm owns these records"}}}})
        return [mapped[i] for i in keep], [times[i] for i in keep], [isos[i] for i in keep]

    def _route(self, batch: Batch, ents: dict[str, _Entity], now: datetime, run_id: int | None,
               changes: list[dict[str, Any]]) -> None:
        """Give the records this page created without an owner one, by the routing chain."""
        assert self.router is not None
        new = {eid: st for eid, st in ents.items() if st.new and st.values.get("owner_id") in (None, "")}
        if not new:
            return
        assigned = self.router.route(batch.conn, self.entity, [(e, st.values) for e, st in new.items()], now)
        now_iso = _iso(now)
        for a in assigned:
            if a.owner is None:  # said once, at creation, so `explain lead <id> owner_id` answers
                changes.append({"entity": self.entity, "entity_id": a.entity_id, "op": "reject", "source": ROUTING,
                                "fields": {"_rejected": {"owner_id": {"value": None, "rule": "routing",
                                                                      "reason": a.reason()}}},
                                "vendor_at": None, "at": now, "run_id": run_id})
                continue
            st = new[a.entity_id]
            st.values["owner_id"] = a.owner
            st.prov["owner_id"] = [ROUTING, None, f"routing:{a.rule}", now_iso, None]
            changes.append({"entity": self.entity, "entity_id": a.entity_id, "op": "update", "source": ROUTING,
                            "fields": {"owner_id": [None, a.owner],
                                       "_accepted": {"owner_id": {"rule": f"routing:{a.rule}", "reason": a.reason()}}},
                            "vendor_at": None, "at": now, "run_id": run_id})
        rows = assignment_activities(self.entity, assigned, {e: st.values for e, st in new.items()}, now)
        batch.insert_rows(activities, rows, conflict=["source", "external_id"])

    def _delete(self, conn: Connection, deleted: list[str], now: datetime, run_id: int | None,
                changes: list[dict[str, Any]], outcome: PageOutcome) -> None:
        """Unlink this source; archive the entity only when the ownership rules say so
        (`hub.ownership.delete_outcome`): never because a minor source deleted it."""
        links = repos.lookup_links(conn, self.connector, self.entity, deleted)
        live = {ext: eid for ext, (eid, d) in links.items() if d is None}
        held = self.hold(conn, list(live)) if self.hold is not None and live else {}
        for ext, wave in held.items():  # a cut-over wave's records are crm's: the source's delete is refused
            outcome.succeeded_ids.append(ext)
            changes.append({"entity": self.entity, "entity_id": live.pop(ext), "op": "reject", "source": self.connector,
                            "vendor_at": None, "at": now, "run_id": run_id, "fields": {"_rejected": {"*": {
                                "rule": "cutover", "reason": f"wave {wave} is cut over: crm owns these records, "
                                "the delete is not applied"}}}})
        if not live:
            return
        repos.set_links_deleted(conn, self.connector, self.entity, list(live), now)
        if self.table is None:
            return
        ids = list(dict.fromkeys(live.values()))
        remaining = repos.linked_systems(conn, self.entity, ids)  # after this unlink
        gone: list[str] = []
        for eid in ids:
            systems = remaining.get(eid, set())
            if self.connector in systems:
                archive, reason = False, f"another {self.connector} record still links it: unlinked only"
            else:
                archive, reason = delete_outcome(self.rules, self.entity, self.connector, systems)
            if archive:
                gone.append(eid)
            changes.append({"entity": self.entity, "entity_id": eid, "op": "archive" if archive else "unlink",
                            "source": self.connector,
                            "fields": {"archived_at": [None, now], "_reason": reason} if archive else {"_reason": reason},
                            "vendor_at": None, "at": now, "run_id": run_id})
        repos.archive_entities(conn, self.table, gone, now)
        outcome.deleted += len(live)
