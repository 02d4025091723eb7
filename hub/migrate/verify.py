"""Verify a wave: re-read the source and compare it with the canonical store, record by record.

Per stream: how many source records the wave selects, how many the crosswalk holds, and per
record a checksum over the mapped fields, source side against store side, plus the reference to
the parent (through the links): field by field, which equals comparing checksums over the
compared fields and says which field differs. A field whose stored value another system set under the
ownership rules (its provenance names that system) is not compared: the rules decided it. A row
the run rejected is listed as such, not as a mismatch. Any other difference fails the verify,
naming the records, with a sample of field-level differences.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from hub.migrate.checksum import checksum, same
from hub.migrate.run import WaveRunner
from hub.migrate.waves import StreamPlan
from hub.sdk.types import RawRecord
from hub.transforms import MappingError
from state import migration_repo as mrepo
from state import repos
from state.schema import ENTITY_TABLES, migration_rejects

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["StreamCheck", "VerifyReport", "verify"]

MAX_IDS = 100  # mismatched ids listed per stream


@dataclass
class StreamCheck:
    stream: str
    source: int = 0  # records of the wave in the source
    crosswalk: int = 0  # records of the wave in hub.migration_items
    matched: int = 0  # equal on every compared field
    mismatched: int = 0
    missing: int = 0  # in the source and the wave, not in the store (and not a known reject)
    rejected: int = 0  # known rejects of the run
    gone_from_source: int = 0  # in the crosswalk, no longer in the source
    owned_elsewhere: int = 0  # fields not compared: the ownership rules gave them to another system
    changed_since: int = 0  # store differs from what the wave wrote (crm users, other systems)
    mismatched_ids: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    wave: str
    ok: bool = True
    streams: list[StreamCheck] = field(default_factory=list)
    diffs: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(hub: Hub, wave: str, *, sample: int = 20, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
           save: bool = True) -> VerifyReport:
    runner = WaveRunner(hub, wave)
    w = runner.wave
    rep = VerifyReport(w.name)
    started = time.perf_counter()
    connector = hub.engine.build(w.source)
    try:
        with hub.db.connect() as conn:
            for sp in w.streams:
                chk = StreamCheck(sp.name)
                rep.streams.append(chk)
                known = _known_rejects(conn, w.name, sp.name)
                seen = 0
                for page in connector.read(sp.name, None):
                    with conn.begin():
                        recs = {r.external_id: r for r in page.records}
                        chosen = runner.select(conn, connector, sp, list(recs.values()), "delta")
                        seen += _compare(conn, w.source, w.name, sp, chosen, known, chk, rep, sample)
                with conn.begin():
                    chk.crosswalk = sum(n for a, n in mrepo.item_counts(conn, w.name).get(sp.name, {}).items()
                                        if a != "deleted")  # a legacy delete applied is not gone unseen
                chk.gone_from_source = max(0, chk.crosswalk - seen)
                if chk.mismatched or chk.missing or chk.gone_from_source:
                    rep.ok = False
            rep.records = sum(s.source for s in rep.streams)
            rep.seconds = time.perf_counter() - started
            if save:
                with conn.begin():
                    mrepo.save_wave(conn, w.name, clock(), last_verified_at=clock(), last_verify_ok=rep.ok,
                                    last_verify={"ok": rep.ok, "streams": [asdict(s) for s in rep.streams],
                                                 "diffs": rep.diffs[:sample]})
    finally:
        connector.close()
    return rep


def _known_rejects(conn: Connection, wave: str, stream: str) -> set[str]:
    t = migration_rejects
    with conn.begin():
        q = select(t.c.legacy_id).where(t.c.wave == wave, t.c.stream == stream, t.c.legacy_id.is_not(None))
        return {str(x) for x in conn.execute(q).scalars()}


def _compare(conn: Connection, source: str, wave: str, sp: StreamPlan, chosen: list[RawRecord], known: set[str],
             chk: StreamCheck, rep: VerifyReport, sample: int) -> int:
    """Compare one page of the wave's source records with the store; returns how many the crosswalk holds."""
    items = mrepo.items_for(conn, source, sp.name, [r.external_id for r in chosen])
    table = ENTITY_TABLES.get(sp.target)
    eids = [it["entity_id"] for it in items.values() if it["wave"] == wave]
    rows = repos.load_entities(conn, table, eids) if table is not None else {}
    ref_entity = sp.mapping.references[sp.ref_field][0] if sp.ref_field else None
    mapped: dict[str, Any] = {}
    for r in chosen:
        try:
            mapped[r.external_id] = sp.mapping.map(r.data)
        except (MappingError, TypeError, ValueError):
            mapped[r.external_id] = None
    refs = {}
    if ref_entity is not None:
        wanted = [m.refs[sp.ref_field] for m in mapped.values() if m is not None and sp.ref_field in m.refs]
        refs = {ext: eid for ext, (eid, _d) in repos.lookup_links(conn, source, ref_entity, wanted).items()}
    fields = sp.fields
    held = 0
    for r in chosen:
        ext = r.external_id
        it = items.get(ext)
        if it is not None and it["wave"] != wave:
            continue  # another wave's record (an overlap the run reported)
        chk.source += 1
        if it is None:
            if ext in known:
                chk.rejected += 1
            else:
                chk.missing += 1
                _bad(chk, ext)
            continue
        held += 1
        if table is None:
            chk.matched += 1
            continue
        row = rows.get(it["entity_id"])
        m = mapped.get(ext)
        if row is None or m is None:
            chk.mismatched += 1
            _bad(chk, ext)
            if len(rep.diffs) < sample:
                rep.diffs.append({"stream": sp.name, "legacy_id": ext, "entity_id": it["entity_id"],
                                  "field": None, "source": None if m is None else "mapped",
                                  "store": None if row is None else "present",
                                  "why": "canonical record is gone" if row is None else "source no longer maps"})
            continue
        prov = row.get("provenance") or {}
        compared = []
        for f in fields:
            p = prov.get(f)
            if isinstance(p, list) and p and p[0] != source:
                chk.owned_elsewhere += 1
                continue
            compared.append(f)
        src_values = dict(m.values)
        if sp.ref_field and sp.ref_field in m.refs:
            src_values[sp.ref_field] = refs.get(m.refs[sp.ref_field])
            compared.append(sp.ref_field)
        differ = [f for f in compared if not same(src_values.get(f), row.get(f))]
        if not differ:
            chk.matched += 1
        else:
            chk.mismatched += 1
            _bad(chk, ext)
            for f in differ:
                if len(rep.diffs) < sample:
                    rep.diffs.append({"stream": sp.name, "legacy_id": ext, "entity_id": it["entity_id"], "field": f,
                                      "source": src_values.get(f), "store": row.get(f)})
        if checksum(row, fields) != it["checksum"]:
            chk.changed_since += 1
    return held


def _bad(chk: StreamCheck, ext: str) -> None:
    if len(chk.mismatched_ids) < MAX_IDS:
        chk.mismatched_ids.append(ext)
