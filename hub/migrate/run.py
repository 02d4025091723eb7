"""Run a wave (or its delta): read the source, keep the wave's records, write them page by page.

Each page is one transaction: the entities, links, provenance and change log (hub.writer), the
crosswalk rows (hub.migration_items), the rejected rows with their reasons, the wave's cursor for
the stream and the lease renewal commit together. A SIGKILL at any point loses at most the page
in flight; `migrate run` again resumes from the last committed page (the wave stays `running`
until every stream is done). A second run of a migrated wave starts a fresh pass that writes
nothing new: the writer changes only what differs.

A dry run does all of it in one transaction on one connection and rolls it back at the end:
every look-up sees what the earlier pages of the same dry run would have written (a contact finds
the account created two pages before), so its counts are those of a real run, and nothing stays.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from hub.migrate.checksum import checksum
from hub.migrate.waves import MigrateError, StreamPlan, Wave, load_wave
from hub.prefetch import prefetch
from hub.sdk.connector import Connector
from hub.sdk.errors import CursorExpired, FatalError, RetriableError
from hub.sdk.types import Page, RawRecord
from hub.sync import ANALYZE_AT as SYNC_ANALYZE_AT
from hub.writer import PageWriter, Prepared
from state import migration_repo as mrepo
from state import repos
from state.bulk import Batch
from state.schema import ENTITY_TABLES, activities, migration_items

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["ReadProgress", "RunReport", "StreamReport", "WaveRunner", "excerpt", "read_progress"]

#: rejected rows kept in a report (all of them are in hub.migration_rejects)
REPORT_REJECTS = 50
#: pages after which planner statistics are refreshed: a sync's points (hub.sync), and the first
#: page too, since a wave also looks up its crosswalk, which starts empty
ANALYZE_AT = SYNC_ANALYZE_AT | {1}
#: crosswalk rows per existence check of a delta's hard-delete sweep
SWEEP_PAGE = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


def excerpt(data: Any, n: int = 200) -> Any:
    """A small copy of a raw record for a reject row: never a 10 MB field, never the whole record."""
    if not isinstance(data, dict):
        return str(data)[:n]
    out = {}
    for i, (k, v) in enumerate(data.items()):
        if i >= 40:
            break
        out[k] = f"{v[:n]}..." if isinstance(v, str) and len(v) > n else v
    return out


@dataclass
class StreamReport:
    stream: str
    target: str
    parent: str | None = None
    status: str = "pending"  # pending, ok, failed, done (an earlier run finished it), held
    read: int = 0  # records read from the source
    selected: int = 0  # of those, in this wave
    created: int = 0
    matched: int = 0  # linked to a record already in the CRM (identity rules)
    updated: int = 0
    unchanged: int = 0
    refused: int = 0  # nothing written: every field refused by the ownership rules
    conflicts: int = 0  # records with fields the ownership rules decided against the source
    rejected: int = 0
    overlaps: int = 0  # in this wave's selection, but already migrated by another wave
    held: int = 0  # in a cut-over wave: crm owns them, the source no longer writes them
    deleted: int = 0  # deleted in the source (a soft-delete flag, or gone): unlinked, archived by the rules
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class RunReport:
    wave: str
    mode: str  # run, delta, plan
    dry_run: bool
    source: str
    pass_no: int = 0
    resumed: bool = False
    status: str = "ok"  # ok, partial (a stream failed), busy
    streams: list[StreamReport] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, key: str) -> int:
        return sum(int(getattr(s, key)) for s in self.streams)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReadProgress:
    """How far the read of a stream is: `done` of `total` `unit`s (rows, or bytes of a file);
    `total` is None when the source cannot tell, and a progress bar then has no ETA."""

    done: int
    total: int | None
    unit: str


def read_progress(connector: Connector, stream: str, cursor: Any, read: int,
                  rows_total: int | None = None) -> ReadProgress:
    """The progress of a stream whose last stored page left `cursor`, `read` records into this run.

    By the source's own position when it has one (`read_position(stream, cursor)`: bytes of a CSV
    file, known without counting rows, and right after a resume too); else by rows against
    `rows_total` (`count_rows(stream)`, as legacy_sql answers); else without a total."""
    at = getattr(connector, "read_position", None)
    pos = at(stream, cursor) if at is not None else None
    if pos is not None:
        return ReadProgress(int(pos[0]), int(pos[1]), "bytes")
    return ReadProgress(read, rows_total, "rows")


ProgressFn = Callable[[StreamReport, ReadProgress], None]
#: called with each page's transaction open (tests use it to look inside; plan to analyse)
PageHook = Callable[[Connection, StreamPlan, list[RawRecord], Any], None]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wave_worker() -> str:
    """Who holds a wave's lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire_wave_lease(conn: Connection, lease: str, worker: str, now: datetime, ttl: timedelta) -> bool:
    """The wave's lease (`migrate:<wave>`: one run, delta or rollback of a wave at a time)."""
    if repos.acquire_lease(conn, lease, worker, now, ttl):
        return True
    # a run on this host that died (kill -9) leaves its lease: take it over when its process is gone
    holder = repos.lease_holder(conn, lease)
    if not holder:
        return False
    host, _, pid = str(holder["owner"]).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or _process_alive(int(pid)):
        return False
    return repos.take_over_lease(conn, lease, holder["owner"], worker, now, ttl)


class WaveRunner:
    """Runs one wave of one hub: `run()`, `run(dry_run=True)`, `delta()`."""

    def __init__(self, hub: Hub, wave: str | Wave, *, clock: Callable[[], datetime] = utcnow,
                 progress: ProgressFn | None = None, page_hook: PageHook | None = None):
        self.hub = hub
        self.wave = wave if isinstance(wave, Wave) else load_wave(hub, wave)
        self.db = hub.db
        self.rules = hub.engine.rules
        self.clock = clock
        self.progress = progress
        self.page_hook = page_hook
        self.worker = wave_worker()
        self.lease = f"migrate:{self.wave.name}"
        self.lease_ttl = timedelta(seconds=hub.cfg.sync.lease_ttl_seconds)
        self.dry = False
        self.sweep = False  # a delta also looks for hard deletes (delta(deletes=True))

    # -- entry points ------------------------------------------------------------------------------

    def run(self, *, dry_run: bool = False) -> RunReport:
        return self._go("run", dry_run)

    def delta(self, *, dry_run: bool = False, deletes: bool = False) -> RunReport:
        """What changed since the last run or delta; with `deletes`, also sweep for rows gone from the
        source (hard deletes: one keyed read per 1,000 of the wave's records, so opt-in)."""
        self.sweep = deletes
        return self._go("delta", dry_run)

    # -- the frame ---------------------------------------------------------------------------------

    @contextmanager
    def _page_tx(self, conn: Connection) -> Iterator[None]:
        if self.dry:
            yield  # the dry run's one transaction stays open until the end
        else:
            with conn.begin():
                yield

    def _go(self, mode: str, dry_run: bool) -> RunReport:
        w = self.wave
        self.dry = dry_run
        report = RunReport(w.name, mode, dry_run, w.source, left_out=list(w.left_out))
        started = time.perf_counter()
        connector = self.hub.engine.build(w.source)
        try:
            with self.db.connect() as conn:
                outer = conn.begin() if dry_run else nullcontext()
                try:
                    with outer:
                        self._frame(conn, connector, mode, report)
                        if dry_run:
                            conn.rollback()  # the whole point: nothing stays
                finally:
                    if dry_run and conn.in_transaction():
                        conn.rollback()
        finally:
            connector.close()
        report.seconds = time.perf_counter() - started
        return report

    def _frame(self, conn: Connection, connector: Connector, mode: str, report: RunReport) -> None:
        w = self.wave
        now = self.clock()
        with self._page_tx(conn):
            if not self._acquire(conn, now):
                holder = repos.lease_holder(conn, self.lease) or {}
                report.status = "busy"
                raise MigrateError(f"wave {w.name} is being migrated by {holder.get('owner')} "
                                   f"(lease until {holder.get('expires_at')})")
            row = mrepo.get_wave(conn, w.name)
            cutover = [r["name"] for r in mrepo.list_waves(conn) if r["state"] == "cut_over"]
            if mode == "run":
                if row is not None and row["state"] == "cut_over":
                    raise MigrateError(f"wave {w.name} is cut over: crm owns its records and the source no longer "
                                       "writes them. Nothing to run")
                if row is not None and row["state"] == "rolling_back":
                    raise MigrateError(f"wave {w.name} was being rolled back when that stopped. "
                                       f"Fix: crmhub migrate rollback {w.name} (it goes on where it stopped)")
                resume = row is not None and row["state"] == "running"
                pass_no = int(row["pass_no"]) if resume and row else int(row["pass_no"] if row else 0) + 1
                if not resume:
                    mrepo.clear_rejects(conn, w.name)
                    for sp in w.streams:
                        repos.put_cursor(conn, w.cursor_owner, sp.name,
                                         {"mode": "run", "pass": pass_no, "done": False, "source": None}, now)
                mrepo.save_wave(conn, w.name, now, source=w.source, root=w.root, definition=w.definition(),
                                state="running", pass_no=pass_no)
                report.resumed = resume
            else:
                if row is None or row["state"] not in ("migrated", "cut_over"):
                    state = row["state"] if row else "never run"
                    raise MigrateError(f"wave {w.name} is {state}: a delta follows a finished run. "
                                       f"Fix: crmhub migrate run {w.name}")
                pass_no = int(row["pass_no"]) + 1
                mrepo.save_wave(conn, w.name, now, pass_no=pass_no)
            report.pass_no = pass_no
        self.cutover_waves = set(cutover)
        relaxed = not self.dry and not self.hub.cfg.sync.durable_page_commits and repos.relax_commits(conn)
        try:
            for sp in w.streams:
                rep = StreamReport(sp.name, sp.target, sp.parent)
                report.streams.append(rep)
                with self._page_tx(conn):
                    cur = repos.get_cursor(conn, w.cursor_owner, sp.name) or {}
                if mode == "run" and cur.get("done") and cur.get("mode") == "run" and cur.get("pass") == pass_no:
                    rep.status = "done"
                    continue
                self._stream(conn, connector, sp, cur.get("source"), mode, pass_no, rep, report)
        finally:
            if relaxed:
                repos.restore_commits(conn)
        with self._page_tx(conn):
            failed = any(s.status == "failed" for s in report.streams)
            report.status = "partial" if failed else "ok"
            report.rejects = [{**r} for r in mrepo.rejects(conn, w.name, REPORT_REJECTS)]
            summary = {"mode": mode, "pass_no": pass_no, "status": report.status,
                       "streams": {s.stream: {k: v for k, v in asdict(s).items() if k not in ("stream",)}
                                   for s in report.streams}}
            values: dict[str, Any] = {"last_run_at": self.clock(), "last_run": summary}
            if mode == "run" and not failed:
                values["state"] = "migrated"
            mrepo.save_wave(conn, w.name, self.clock(), **values)
            repos.release_lease(conn, self.lease, self.worker)

    def _acquire(self, conn: Connection, now: datetime) -> bool:
        return acquire_wave_lease(conn, self.lease, self.worker, now, self.lease_ttl)

    # -- one stream --------------------------------------------------------------------------------

    def _stream(self, conn: Connection, connector: Connector, sp: StreamPlan, cursor: Any, mode: str,
                pass_no: int, rep: StreamReport, report: RunReport) -> None:
        w = self.wave
        started = time.perf_counter()
        writer = PageWriter(w.source, sp.name, sp.mapping, self.rules)
        rows_total = self._rows_total(connector, sp.name) if self.progress else None
        with self._page_tx(conn):
            run_id = repos.start_run(conn, w.source, w.run_stream(sp.name), self.clock(), self.worker)
        status, error = "ok", None
        last = cursor
        try:
            # mapping is pure CPU: it runs in the read thread, ahead, while this one waits on the database
            pages = prefetch(((page, *_premap(writer, page, mode)) for page in connector.read(sp.name, cursor)),
                             self.hub.cfg.sync.prefetch_pages)
            for page, records, dups, prepared in pages:
                self._page(conn, connector, writer, sp, page, records, dups, prepared, mode, pass_no, run_id, rep)
                last = page.next_cursor
                if not self.dry and mode == "run" and rep.pages in ANALYZE_AT:
                    repos.refresh_statistics(self.db, [*writer.tables(), migration_items], rep.read)
                if self.progress:
                    self.progress(rep, read_progress(connector, sp.name, last, rep.read, rows_total))
            if mode == "delta" and self.sweep and not self.dry and w.name not in self.cutover_waves:
                self._sweep(conn, connector, writer, sp, run_id, rep)
        except (FatalError, RetriableError, CursorExpired, MigrateError) as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        rep.status, rep.error = status, error
        rep.seconds += time.perf_counter() - started
        with self._page_tx(conn):
            if status == "ok":  # the stream is done: a resume skips it, the next delta starts here
                repos.put_cursor(conn, w.cursor_owner, sp.name,
                                 {"mode": mode, "pass": pass_no, "done": True, "source": last}, self.clock())
            repos.finish_run(conn, run_id, status, self.clock(), error)

    @staticmethod
    def _rows_total(connector: Connector, stream: str) -> int | None:
        """A progress bar's total in rows, from a source that counts them (one query per stream)."""
        if hasattr(connector, "read_position"):
            return None  # it measures its own progress (bytes of a file): no count needed
        count = getattr(connector, "count_rows", None)
        return int(count(stream)) if count is not None else None

    def _page(self, conn: Connection, connector: Connector, writer: PageWriter, sp: StreamPlan, page: Page,
              records: list[RawRecord], dups: list[tuple[RawRecord, str]], prepared_all: Prepared, mode: str,
              pass_no: int, run_id: int, rep: StreamReport) -> None:
        w = self.wave
        now = self.clock()
        rejects: list[dict[str, Any]] = []

        def reject(ext: str | None, reason: str, payload: Any) -> None:
            rejects.append({"wave": w.name, "source": w.source, "stream": sp.name, "legacy_id": ext,
                            "reason": reason, "payload": excerpt(payload), "pass_no": pass_no, "at": now})

        for rj in page.rejected:
            reject(rj.external_id, rj.reason, rj.payload)
        rep.read += len(page.records)
        for r, why in dups:
            reject(r.external_id, why, r.data)
        with self._page_tx(conn):
            chosen = self.select(conn, connector, sp, records, mode)
            existing = mrepo.items_for(conn, w.source, sp.name, [r.external_id for r in chosen])
            keep: list[RawRecord] = []
            for r in chosen:
                item = existing.get(r.external_id)
                if item is not None and item["wave"] != w.name:
                    if item["wave"] in self.cutover_waves:
                        rep.held += 1
                    else:
                        rep.overlaps += 1
                        reject(r.external_id, f"already migrated by wave {item['wave']}: a record belongs to one "
                               "wave only", r.data)
                    continue
                if item is not None and w.name in self.cutover_waves:
                    rep.held += 1  # this wave is cut over: crm owns its records now
                    continue
                if item is not None and mode == "run" and item["pass_no"] == pass_no:
                    reject(r.external_id, f"duplicate id {r.external_id!r}: an earlier row of this export with the "
                           "same id was migrated, this one was not", r.data)
                    continue
                keep.append(r)
            rep.selected += len(keep)
            batch = Batch(conn)
            items: list[dict[str, Any]] = []
            written = 0
            gone = self._deletes(conn, sp, page.deleted)
            if keep or gone:
                prepared = _only(prepared_all, {r.external_id for r in keep})
                outcome = writer.write(batch, prepared, gone, now, run_id)
                batch.flush()
                if gone:
                    mrepo.mark_deleted(conn, w.source, sp.name, gone, now)
                    rep.deleted += len(gone)
                written = outcome.written
                for f in outcome.failures:
                    reject(f["external_id"], f["reason"], f.get("payload"))
                mapped = {rec.external_id: m.values for rec, m in prepared.mapped}
                items = self._crosswalk(conn, sp, outcome.succeeded_ids, existing, pass_no, run_id, now, rep, mapped)
            rep.rejected += len(rejects)
            if self.page_hook:
                self.page_hook(conn, sp, keep, rejects)
            mrepo.upsert_items(batch, items)
            mrepo.add_rejects(batch, rejects)
            cursor = {"mode": mode, "pass": pass_no, "done": False, "source": page.next_cursor}
            held = repos.checkpoint(batch, lease=self.lease, owner=self.worker, now=now, ttl=self.lease_ttl,
                                    connector=w.cursor_owner, stream=sp.name, cursor=cursor, run_id=run_id,
                                    read=len(page.records), written=written, deleted=0, failed=len(rejects),
                                    requests=page.requests)
            if not held:
                raise MigrateError(f"the lease of wave {w.name} was lost to another worker; this page was not written")
            try:
                repos.flush_page(batch)
            except repos.LeaseLostError:
                raise MigrateError(f"the lease of wave {w.name} was lost to another worker") from None
        rep.pages += 1

    def _deletes(self, conn: Connection, sp: StreamPlan, deleted: list[str]) -> list[str]:
        """Of the source's deletes, the records this wave migrated and still holds live (not those
        of a cut-over wave: crm owns them, and a legacy delete no longer reaches them)."""
        if not deleted or self.dry or self.wave.name in self.cutover_waves:
            return []
        items = mrepo.items_for(conn, self.wave.source, sp.name, deleted)
        return [x for x, it in items.items() if it["wave"] == self.wave.name and it.get("deleted_at") is None]

    def _sweep(self, conn: Connection, connector: Connector, writer: PageWriter, sp: StreamPlan, run_id: int,
               rep: StreamReport) -> None:
        """Hard deletes: the wave's live records whose legacy row is gone. The crosswalk is read in
        keyset pages and the source asked which of each page still exist (`Connector.existing`),
        so memory stays flat however large the wave; one transaction per page, as everywhere."""
        after: str | None = None
        while True:
            with self._page_tx(conn):
                page = mrepo.page_items(conn, self.wave.name, sp.name, after, SWEEP_PAGE, self.wave.source)
            if not page:
                return
            after = page[-1]["legacy_id"]
            live = [it["legacy_id"] for it in page if it.get("deleted_at") is None]
            if not live:
                continue
            present = connector.existing(sp.name, live)
            if present is None:
                return  # the connector cannot tell
            missing = [x for x in live if x not in present]
            if missing:
                now = self.clock()
                with self._page_tx(conn):
                    if not repos.renew_lease(conn, self.lease, self.worker, now, self.lease_ttl):
                        raise MigrateError(f"the lease of wave {self.wave.name} was lost to another worker")
                    batch = Batch(conn)
                    writer.write(batch, Prepared(), missing, now, run_id)
                    batch.flush()
                    mrepo.mark_deleted(conn, self.wave.source, sp.name, missing, now)
                rep.deleted += len(missing)

    def select(self, conn: Connection, connector: Connector, sp: StreamPlan,
                records: list[RawRecord], mode: str) -> list[RawRecord]:
        """The page's records that belong to this wave: selected roots, or children of the wave's parents.

        In a delta a root record the wave already holds stays in it even when it no longer matches
        the filter (a record belongs to one wave; it moves only by a rollback and another wave)."""
        w = self.wave
        if not records:
            return []
        if sp.parent is None:
            ids = w.select_roots(connector, records)
            if mode == "delta":
                held = mrepo.items_for(conn, w.source, sp.name, [r.external_id for r in records])
                ids |= {k for k, it in held.items() if it["wave"] == w.name}
            return [r for r in records if r.external_id in ids]
        assert sp.parent_ref is not None
        refs: dict[str, str] = {}
        for r in records:
            v = sp.parent_ref(r.data)
            if v not in (None, ""):
                refs[r.external_id] = str(v)
        parents = mrepo.items_for(conn, w.source, sp.parent, list(set(refs.values())))
        mine = {k for k, it in parents.items() if it["wave"] == w.name}
        return [r for r in records if refs.get(r.external_id) in mine]

    def _crosswalk(self, conn: Connection, sp: StreamPlan, ok_ids: list[str], existing: dict[str, dict[str, Any]],
                   pass_no: int, run_id: int, now: datetime, rep: StreamReport,
                   mapped: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Crosswalk rows for the page's written records: canonical id, action, checksum as stored.

        A record the page created, with nothing refused, holds exactly its mapped values: its
        checksum is taken from them; the others' from their rows as stored (one query)."""
        w = self.wave
        if not ok_ids:
            return []
        table = ENTITY_TABLES.get(sp.target)
        if table is None:  # activities: the row is found by (source, external id)
            q = select(activities.c.external_id, activities.c.id).where(
                activities.c.source == w.source, activities.c.external_id.in_(ok_ids))
            ids = {ext: eid for ext, eid in conn.execute(q)}
            new = sum(1 for ext in ids if ext not in existing)
            rep.created += new  # an activity seen before is appended once: a new version at most
            rep.unchanged += len(ids) - new
            return [{"source": w.source, "stream": sp.name, "legacy_id": ext, "wave": w.name, "entity": "activity",
                     "entity_id": eid, "action": "created", "checksum": "", "pass_no": pass_no, "written_at": now,
                     "deleted_at": None}
                    for ext, eid in ids.items()]
        links = repos.lookup_links(conn, w.source, sp.target, ok_ids)
        eids = [links[x][0] for x in ok_ids if x in links]
        ops = mrepo.run_ops(conn, sp.target, eids, run_id)
        stored = [e for e in eids if ops.get(e, ("", 0))[0] != "create" or ops[e][1]]
        rows = repos.load_entities(conn, table, stored) if stored else {}
        fields = sp.fields
        out = []
        for ext in ok_ids:
            if ext not in links:
                continue
            eid = links[ext][0]
            op, n_refused = ops.get(eid, (None, 0))
            if n_refused:
                rep.conflicts += 1
            if op == "create":
                rep.created += 1
            elif op == "link":
                rep.matched += 1
            elif op == "update":
                rep.updated += 1
            elif op == "reject":
                rep.refused += 1
            else:
                rep.unchanged += 1
            item = existing.get(ext)
            action = item["action"] if item else {"create": "created", "link": "matched"}.get(op or "", "updated")
            values = rows[eid] if eid in rows else (mapped.get(ext) or {})
            out.append({"source": w.source, "stream": sp.name, "legacy_id": ext, "wave": w.name, "entity": sp.target,
                        "entity_id": eid, "action": action, "checksum": checksum(values, fields),
                        "pass_no": pass_no, "written_at": now, "deleted_at": None})
        return out


def _premap(writer: PageWriter, page: Page, mode: str) -> tuple[list[RawRecord], list[tuple[RawRecord, str]], Prepared]:
    """A page's records, one per id, and their mapping (in the read thread).

    Later copies of an id in one page are duplicates of the export in a run (the first one is
    kept, the others rejected), or later versions of the same record in a delta (the last wins)."""
    records: dict[str, RawRecord] = {}
    dups: list[tuple[RawRecord, str]] = []
    for r in page.records:
        first = records.get(r.external_id)
        if first is not None and mode == "run":
            dups.append((r, f"duplicate id {r.external_id!r}: the row at {_where(first)} was kept, this one at "
                         f"{_where(r)} was not"))
            continue
        records[r.external_id] = r
    kept = list(records.values())
    return kept, dups, writer.prepare(kept)


def _only(prepared: Prepared, ids: set[str]) -> Prepared:
    """The part of a mapped page that is about `ids`."""
    out = Prepared(read=len(ids))
    for pair, t, iso in zip(prepared.mapped, prepared.times, prepared.isos, strict=True):
        if pair[0].external_id in ids:
            out.mapped.append(pair)
            out.times.append(t)
            out.isos.append(iso)
    for ev, rid in zip(prepared.events, prepared.event_ids, strict=True):  # an activity stream's
        if rid in ids:
            out.events.append(ev)
            out.event_ids.append(rid)
    out.failures = [f for f in prepared.failures if f["external_id"] in ids]
    return out


def _where(r: RawRecord) -> str:
    line = r.data.get("_line") if isinstance(r.data, dict) else None
    return f"line {line}" if line is not None else "an earlier position"
