"""Plan a wave: what a run would do, found by doing it (a dry run), plus what the mapping misses.

The plan is a dry run (every step of a run, rolled back) that also looks at each page of the
wave's records: counts per object; mapping coverage (source columns no mapping reads; values a
transform refuses, with counts and samples); duplicates within the wave by the identity keys
(contact email, account domain); matches with records already in the CRM (identity rules) and
fields the ownership rules will decide against the source, per field with the rule and samples
(from the dry run's own decisions in the change log); the rows a run would reject, with their
reasons; overlaps with the other waves of the same source; and an estimate of the run's time
(the dry run's own time: a run costs the same plus its commits).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select

from hub.identity import lookup_key
from hub.migrate.run import WaveRunner
from hub.migrate.waves import StreamPlan, load_wave
from hub.sdk.types import RawRecord
from hub.transforms import MappingError
from state import migration_repo as mrepo
from state import repos
from state.schema import ENTITY_TABLES, sync_runs

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["PlanReport", "plan"]

SAMPLES = 3


@dataclass
class StreamPlanReport:
    stream: str
    target: str
    parent: str | None
    read: int = 0
    records: int = 0  # in the wave
    would_create: int = 0
    would_match: int = 0  # existing CRM records found by the identity rules
    would_update: int = 0
    unchanged: int = 0
    would_reject: int = 0
    conflicts: int = 0  # records with fields the ownership rules will decide against the source
    #: field -> {count, rule, samples: [{legacy_id, value, reason}]}: what `conflicts` are about
    conflict_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    overlaps_migrated: int = 0  # already migrated by another wave
    unmapped_columns: list[str] = field(default_factory=list)
    transform_failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> {count, samples}
    duplicates: dict[str, Any] = field(default_factory=dict)  # {key, count, samples}


@dataclass
class PlanReport:
    wave: str
    source: str
    root: str
    where: str | None
    streams: list[StreamPlanReport] = field(default_factory=list)
    overlaps: dict[str, dict[str, Any]] = field(default_factory=dict)  # other wave -> {count, samples}
    left_out: list[str] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    estimate_seconds: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Analysis:
    def __init__(self, hub: Hub, wave: str):
        self.hub = hub
        self.columns: dict[str, set[str]] = {}
        self.failures: dict[str, dict[str, dict[str, Any]]] = {}
        self.keys: dict[str, Counter[str]] = {}
        self.wave = w = load_wave(hub, wave)
        self.others = [load_wave(hub, n) for n, c in hub.cfg.waves.items()
                       if n != wave and c.source == w.source and c.root == w.root]
        self.overlaps: dict[str, dict[str, Any]] = {}
        self.connector: Any = None
        self.conflicts: dict[str, dict[str, dict[str, Any]]] = {}
        self._last_seq: dict[str, int] = {}
        self._run_ids: dict[str, int | None] = {}

    def hook(self, conn: Connection, sp: StreamPlan, records: list[RawRecord], rejects: Any) -> None:
        self._refusals(conn, sp, records)
        read = {p.split(".")[0].split("[")[0] for p in sp.mapping.paths} | {sp.key}
        cols = self.columns.setdefault(sp.name, set())
        fails = self.failures.setdefault(sp.name, {})
        dup = lookup_key(sp.target)
        keys = self.keys.setdefault(sp.name, Counter())
        for r in records:
            if isinstance(r.data, dict):
                cols.update(k for k in r.data if not k.startswith("_") and k not in read)
            for rule in sp.mapping.fields:
                try:
                    v = rule.apply(r.data)
                except MappingError as e:
                    f = fails.setdefault(rule.name, {"count": 0, "samples": []})
                    f["count"] += 1
                    if len(f["samples"]) < SAMPLES:
                        f["samples"].append({"legacy_id": r.external_id, "error": str(e)})
                    continue
                if dup is not None and rule.name == dup.field:
                    k = dup.normalise(v)
                    if k:
                        keys[k] += 1
        if sp.parent is None and self.others and self.connector is not None:
            for other in self.others:
                both = other.select_roots(self.connector, records)
                if both:
                    o = self.overlaps.setdefault(other.name, {"count": 0, "samples": []})
                    o["count"] += len(both)
                    o["samples"].extend(sorted(both)[: max(0, SAMPLES - len(o["samples"]))])

    def _refusals(self, conn: Connection, sp: StreamPlan, records: list[RawRecord]) -> None:
        """The fields the ownership rules refused the source on this page, read back from the
        change log the dry run wrote (`_rejected`: field -> value, rule, reason)."""
        w = self.wave
        if not records or sp.target not in ENTITY_TABLES:
            return
        if sp.name not in self._run_ids:  # the dry run's run of this stream: asked once
            self._run_ids[sp.name] = conn.execute(select(func.max(sync_runs.c.id)).where(
                sync_runs.c.connector == w.source, sync_runs.c.stream == w.run_stream(sp.name))).scalar()
        run_id = self._run_ids[sp.name]
        links = repos.lookup_links(conn, w.source, sp.target, [r.external_id for r in records])
        legacy = {eid: ext for ext, (eid, _d) in links.items()}
        if run_id is None or not legacy:
            return
        after = self._last_seq.get(sp.name, 0)  # each change once, though a record may come again
        out = self.conflicts.setdefault(sp.name, {})
        for ch in mrepo.changes_for(conn, sp.target, list(legacy), [run_id]):
            self._last_seq[sp.name] = max(self._last_seq.get(sp.name, 0), int(ch["seq"]))
            if ch["seq"] <= after or ch["source"] != w.source:
                continue
            for fname, d in ((ch["fields"] or {}).get("_rejected") or {}).items():
                f = out.setdefault(fname, {"count": 0, "rule": d.get("rule"), "samples": []})
                f["count"] += 1
                if len(f["samples"]) < SAMPLES:
                    f["samples"].append({"legacy_id": legacy[ch["entity_id"]], "value": d.get("value"),
                                         "reason": d.get("reason")})


def plan(hub: Hub, wave: str) -> PlanReport:
    started = time.perf_counter()
    analysis = _Analysis(hub, wave)
    runner = WaveRunner(hub, wave, page_hook=analysis.hook)
    w = runner.wave
    analysis.connector = hub.engine.build(w.source)
    try:
        dry = runner.run(dry_run=True)
    finally:
        analysis.connector.close()
    rep = PlanReport(w.name, w.source, w.root, w.where or (f"ids in {w.ids_file}" if w.ids_file else None),
                     left_out=list(w.left_out), rejects=dry.rejects, overlaps=analysis.overlaps)
    for s in dry.streams:
        sp = StreamPlanReport(s.stream, s.target, s.parent, read=s.read, records=s.selected + s.overlaps,
                              would_create=s.created, would_match=s.matched, would_update=s.updated,
                              unchanged=s.unchanged, would_reject=s.rejected, conflicts=s.conflicts,
                              overlaps_migrated=s.overlaps)
        sp.unmapped_columns = sorted(analysis.columns.get(s.stream, ()))
        sp.transform_failures = analysis.failures.get(s.stream, {})
        sp.conflict_fields = analysis.conflicts.get(s.stream, {})
        keys = analysis.keys.get(s.stream, Counter())
        dups = {k: n for k, n in keys.items() if n > 1}
        lk = lookup_key(s.target)
        if dups and lk is not None:  # keys are only counted for an entity that has one
            sp.duplicates = {"key": lk.field, "count": sum(dups.values()) - len(dups),
                             "samples": sorted(dups, key=lambda k: -dups[k])[:SAMPLES]}
        rep.streams.append(sp)
    rep.records = sum(s.records for s in rep.streams)
    rep.estimate_seconds = round(dry.seconds, 3)  # not to one decimal: a small wave's would read 0
    rep.seconds = time.perf_counter() - started
    return rep
