"""The sync engine: lease a stream, read pages, write each page as one transaction.

The transaction that writes a page's entities, links and change log also stores
the cursor that follows the page and renews the stream's lease. That commit is
the checkpoint: a crash anywhere resumes from the last committed page, with
nothing lost and nothing written twice (see docs/guarantees.md).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from hub.activities import relink
from hub.config import HubConfig
from hub.mapping import MappingLoadError, Mappings
from hub.ownership import Rules, load_rules
from hub.prefetch import prefetch
from hub.registry import ConnectorFactory
from hub.routing import Router, load_routing
from hub.sdk.connector import Connector
from hub.sdk.errors import CursorExpired, FatalError, RetriableError
from hub.sdk.types import Cursor, Page, RawRecord
from hub.writer import PageOutcome, PageWriter, Prepared
from state import repos
from state.bulk import Batch

log = logging.getLogger("crmhub.sync")

#: canonical entities that others reference go first, so references resolve to real rows
TARGET_ORDER = {"account": 0, "contact": 1, "lead": 1, "opportunity": 2, "activity": 3}


#: pages after which a bulk load refreshes planner statistics (PostgreSQL): a table that
#: grew from empty would otherwise be planned as tiny, and link look-ups would scan it. Each
#: point analyses only the tables planned smaller than the load so far (repos.refresh_statistics),
#: so the points can be dense: a 1M-record load once ended planned at 400k rows (points 400, 4000).
ANALYZE_AT = frozenset({4, 10, 40, 100, 400, 1000, 4000, 10000})


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def utcnow() -> datetime:
    return datetime.now(UTC)


class LeaseLost(Exception):
    """Another worker took this stream's lease: stop writing at once."""


@dataclass
class StreamResult:
    connector: str
    stream: str
    status: str = "ok"  # ok, failed, busy
    read: int = 0
    written: int = 0
    deleted: int = 0
    failed: int = 0
    requests: int = 0
    pages: int = 0
    retried: int = 0  # queued records replayed successfully
    relinked: int = 0  # activity participants attached to contacts after this contact sync
    cursor: Cursor | None = None
    full_resync: bool = False
    resync_reason: str | None = None
    error: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


ProgressFn = Callable[[StreamResult], None]


def group_pages(pairs: Iterator[tuple[Page, Prepared]], min_records: int) -> Iterator[tuple[Page, Prepared]]:
    """Vendor pages joined into commits of at least `min_records` records.

    A vendor's page size is its own (HubSpot: 100); a commit's round trips cost the same
    for 100 records as for 1,000. The joined page's cursor is its last page's, valid once
    all of them are stored, so a commit stays a checkpoint. A record read twice keeps its
    last version. A page that reports deletes ends its group, so a delete is never
    applied before a record read ahead of it.
    """
    group: list[tuple[Page, Prepared]] = []
    size = 0
    for page, prepared in pairs:
        group.append((page, prepared))
        size += prepared.read
        if size >= min_records or page.deleted:
            yield _join(group)
            group, size = [], 0
    if group:
        yield _join(group)


def _join(group: list[tuple[Page, Prepared]]) -> tuple[Page, Prepared]:
    if len(group) == 1:
        return group[0]
    page = Page(next_cursor=group[-1][0].next_cursor, requests=sum(p.requests for p, _ in group))
    out = Prepared()
    last: dict[str, int] = {}  # external id -> position of its last version in `out.mapped`
    for p, prep in group:
        page.deleted.extend(p.deleted)
        page.rejected.extend(p.rejected)
        out.read += prep.read
        out.failures.extend(prep.failures)
        out.events.extend(prep.events)
        out.event_ids.extend(prep.event_ids)
        for item, t, iso in zip(prep.mapped, prep.times, prep.isos, strict=True):
            ext = item[0].external_id
            if ext in last:  # read twice: keep the later version, in the earlier place
                i = last[ext]
                out.mapped[i], out.times[i], out.isos[i] = item, t, iso
                continue
            last[ext] = len(out.mapped)
            out.mapped.append(item)
            out.times.append(t)
            out.isos.append(iso)
    return page, out


class SyncEngine:
    def __init__(self, cfg: HubConfig, db: Engine, factory: ConnectorFactory, mappings: Mappings, *,
                 worker: str | None = None, clock: Callable[[], datetime] = utcnow, rules: Rules | None = None):
        self.cfg = cfg
        #: per-field source of truth for every page writer (a bad rule fails here, with its key)
        self.rules = rules if rules is not None else load_rules(cfg.ownership, systems=list(cfg.connectors))
        spec = load_routing(cfg.routing, cfg.path or "crmhub.yaml")
        self.router = Router(spec) if spec is not None else None
        self.db = db
        self.factory = factory
        self.mappings = mappings
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        s = cfg.sync
        self.lease_ttl = timedelta(seconds=s.lease_ttl_seconds)
        self.backoff = timedelta(seconds=s.retry_backoff_seconds)
        self.max_attempts = s.retry_max_attempts

    # -- planning --------------------------------------------------------------------------------

    def plan(self, target: str | None = None) -> list[tuple[str, str]]:
        """(instance, stream) pairs to run: all enabled, one instance, or `instance.stream`."""
        inst, _, only = (target or "").partition(".")
        names = [inst] if inst else self.factory.names()
        pairs: list[tuple[int, int, str, str]] = []
        for n_i, name in enumerate(names):
            conn = self.factory.build(name)
            try:
                specs = [conn.stream(only)] if only else conn.enabled_streams()
            finally:
                conn.close()
            for spec in specs:
                pairs.append((TARGET_ORDER.get(spec.target, 9), n_i, name, spec.name))
        return [(name, stream) for _o, _n, name, stream in sorted(pairs)]

    def mapping_problems(self, conn: Connector) -> list[str]:
        """What is wrong with the mappings of a connector's enabled streams (each message names
        the file, line and key), found without reading the vendor: `connectors check` says it."""
        problems = []
        for spec in conn.enabled_streams():
            try:
                self.mappings.stream(conn.name, type(conn).kind, spec.name, spec.target)
            except MappingLoadError as e:
                problems.append(str(e))
        return list(dict.fromkeys(problems))

    def build(self, name: str) -> Connector:
        """A connector instance that knows which vendor fields its mappings read."""
        try:
            streams = self.mappings.for_connector(name, self.factory.kind(name))
            hints = {s: m.paths for s, m in streams.items()}
        except (KeyError, MappingLoadError):  # an activity connector may have no mapping file
            hints = {}
        return self.factory.build(name, hints)

    def run(self, target: str | None = None, *, full: bool = False,
            progress: ProgressFn | None = None) -> list[StreamResult]:
        results = []
        built: dict[str, Connector] = {}
        try:
            for name, stream in self.plan(target):
                conn = built.get(name) or built.setdefault(name, self.build(name))
                results.append(self.run_stream(conn, stream, full=full, progress=progress))
        finally:
            for c in built.values():
                c.close()
        return results

    # -- one stream ------------------------------------------------------------------------------

    def run_stream(self, connector: Connector, stream: str, *, full: bool = False,
                   progress: ProgressFn | None = None) -> StreamResult:
        name = connector.name
        result = StreamResult(connector=name, stream=stream)
        lease = f"stream:{name}.{stream}"
        started = time.perf_counter()
        with self.db.begin() as tx:
            if not repos.acquire_lease(tx, lease, self.worker, self.clock(), self.lease_ttl) and not \
                    self._take_over_from_dead_worker(tx, lease):
                holder = repos.lease_holder(tx, lease) or {}
                result.status = "busy"
                result.error = f"{name}.{stream} is being synced by {holder.get('owner')} (lease until {holder.get('expires_at')})"
                return result
        try:
            writer = self.writer_for(connector, stream)
            with self.db.begin() as tx:
                cursor = None if full else repos.get_cursor(tx, name, stream)
                reason = "requested (--full)" if full else None
                result.run_id = repos.start_run(tx, name, stream, self.clock(), self.worker, full, reason)
                result.full_resync, result.resync_reason = full, reason
                retries_open = sum(repos.count_failures(tx, name, stream).values()) > 0
            result.cursor = cursor
            if retries_open:
                self._replay_due(writer, result)
            # one connection for the run: no pool check-out (and ping) per page
            with self.db.connect() as conn:
                relaxed = not self.cfg.sync.durable_page_commits and repos.relax_commits(conn)
                try:
                    self._read_all(conn, connector, stream, writer, cursor, result, lease, retries_open, progress)
                finally:
                    if relaxed:
                        repos.restore_commits(conn)
            if writer.entity == "contact" and result.written:
                # activities whose people were unknown until now find them (hub.activities)
                with self.db.begin() as tx:
                    result.relinked = relink(tx)
            status, error = "ok", None
        except (LeaseLost, MappingLoadError) as exc:  # MappingLoadError names file, line, key: no traceback
            status, error = "failed", str(exc)
        except (FatalError, RetriableError, CursorExpired) as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.exception("sync of %s.%s failed", name, stream)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        result.status, result.error = status, error
        result.seconds = time.perf_counter() - started
        with self.db.begin() as tx:
            if result.run_id is not None:
                repos.finish_run(tx, result.run_id, status, self.clock(), error)
            repos.release_lease(tx, lease, self.worker)
        return result

    def writer_for(self, connector: Connector, stream: str) -> PageWriter:
        """The page writer of one stream: its mapping, the ownership rules, and for activity
        streams the instance's internal users (hub.sdk.activity.ActivityConnectorConfig)."""
        kind = type(connector).kind
        target = connector.stream(stream).target
        internal = getattr(connector.config, "internal", None) or ()
        return PageWriter(connector.name, stream, self.mappings.stream(connector.name, kind, stream, target),
                          self.rules, internal=internal, router=self.router, hold=self._hold(connector.name, stream))

    def _hold(self, name: str, stream: str) -> Callable[[Connection, list[str]], dict[str, str]]:
        """Records of a cut-over migration wave are `crm`'s: a sync of their legacy source skips them.

        Asked on the page's own connection, once per writer: a second connection here would wait
        on the write lock the page holds (SQLite), e.g. when the inbox processor builds a writer."""
        from state import migration_repo
        from state.schema import migration_waves as w

        cut: list[bool] = []

        def hold(conn: Connection, ids: list[str]) -> dict[str, str]:
            if not cut:
                cut.append(conn.execute(select(w.c.name).where(
                    w.c.source == name, w.c.state == "cut_over").limit(1)).first() is not None)
            return migration_repo.held_ids(conn, name, stream, ids) if cut[0] else {}
        return hold

    def _take_over_from_dead_worker(self, tx: Connection, lease: str) -> bool:
        """A worker on this host that died (kill -9, OOM) leaves its lease until it expires;
        when its process is gone, take the lease over at once instead of waiting."""
        holder = repos.lease_holder(tx, lease)
        if not holder:
            return False
        host, _, pid = str(holder["owner"]).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or _process_alive(int(pid)):
            return False
        log.warning("taking over lease %s from %s, whose process is gone", lease, holder["owner"])
        return repos.take_over_lease(tx, lease, holder["owner"], self.worker, self.clock(), self.lease_ttl)

    def _read_all(self, conn: Connection, connector: Connector, stream: str, writer: PageWriter, cursor: Cursor | None,
                  result: StreamResult, lease: str, retries_open: bool, progress: ProgressFn | None) -> None:
        resynced = False
        while True:
            try:
                # mapping (and grouping small vendor pages into one commit) runs in the read
                # thread too, while this one waits on the database
                pages = group_pages(((page, writer.prepare(page.records)) for page in connector.read(stream, cursor)),
                                    self.cfg.sync.commit_records)
                for page, prepared in prefetch(pages, self.cfg.sync.prefetch_pages):
                    outcome = self._commit_page(conn, writer, prepared, page.deleted, page.rejected,
                                                page.next_cursor, result, lease, retries_open, page.requests)
                    retries_open = retries_open or bool(outcome.failures)
                    if result.pages in ANALYZE_AT:
                        repos.refresh_statistics(self.db, writer.tables(), result.read)
                    cursor = page.next_cursor
                    result.cursor = cursor
                    if progress:
                        progress(result)
                return
            except CursorExpired as exc:
                if resynced:
                    raise
                resynced = True
                reason = f"cursor expired: {exc}"
                log.warning("%s.%s: %s; starting a full resync", connector.name, stream, reason)
                with conn.begin():
                    repos.put_cursor(conn, connector.name, stream, None, self.clock())
                    assert result.run_id is not None
                    repos.mark_resync(conn, result.run_id, reason)
                result.full_resync, result.resync_reason = True, reason
                cursor = None

    def _commit_page(self, tx: Connection, writer: PageWriter, prepared: Prepared, deleted: list[str], rejected: list[Any],
                     next_cursor: Cursor | None, result: StreamResult, lease: str, retries_open: bool,
                     requests: int) -> PageOutcome:
        now = self.clock()
        with tx.begin():
            batch = Batch(tx)
            outcome = writer.write(batch, prepared, deleted, now, result.run_id)
            outcome.read += len(rejected)  # read, though the connector could not parse them
            for r in rejected:
                outcome.failures.append({"external_id": r.external_id or f"unknown:{hash(str(r.payload))}",
                                         "payload": r.payload, "reason": r.reason})
            outcome.failed = len(outcome.failures)
            if outcome.failures or (retries_open and outcome.succeeded_ids):
                batch.flush()
            if outcome.failures:
                repos.record_failures(tx, writer.connector, writer.stream, outcome.failures, now,
                                      self.backoff, self.max_attempts)
            if retries_open and outcome.succeeded_ids:
                repos.clear_failures(tx, writer.connector, writer.stream, outcome.succeeded_ids)
            assert result.run_id is not None
            # last, and in one statement: renew the lease, store the cursor, count the page. A lost
            # lease rolls the whole page back (a fencing check), so a stalled worker cannot write.
            held = repos.checkpoint(batch, lease=lease, owner=self.worker, now=now, ttl=self.lease_ttl,
                                    connector=writer.connector, stream=writer.stream, cursor=next_cursor,
                                    run_id=result.run_id, read=outcome.read, written=outcome.written,
                                    deleted=outcome.deleted, failed=outcome.failed, requests=requests)
            try:
                if not held:
                    raise repos.LeaseLostError("renewal found another owner")
                repos.flush_page(batch)
            except repos.LeaseLostError:
                raise LeaseLost(f"lease {lease} was lost to another worker; this page was not written") from None
        result.read += outcome.read
        result.written += outcome.written
        result.deleted += outcome.deleted
        result.failed += outcome.failed
        result.requests += requests
        result.pages += 1
        return outcome

    def _replay_due(self, writer: PageWriter, result: StreamResult) -> None:
        """Try queued records again through the same path; dead-letter after max attempts."""
        with self.db.begin() as tx:
            due = repos.due_failures(tx, writer.connector, writer.stream, self.clock())
        if not due:
            return
        records = [RawRecord(external_id=r["external_id"], updated_at=None, data=r["payload"]) for r in due]
        now = self.clock()
        with self.db.begin() as tx:
            batch = Batch(tx)
            outcome = writer.write(batch, writer.prepare(records), [], now, result.run_id)
            batch.flush()
            if outcome.failures:
                repos.record_failures(tx, writer.connector, writer.stream, outcome.failures, now,
                                      self.backoff, self.max_attempts)
            repos.clear_failures(tx, writer.connector, writer.stream, outcome.succeeded_ids)
            assert result.run_id is not None
            repos.add_run_counts(tx, result.run_id, written=outcome.written)
        result.retried += len(outcome.succeeded_ids)
        result.written += outcome.written
