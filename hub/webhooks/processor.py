"""Inbox processing: workers turn stored webhook events into canonical writes.

    processor = InboxProcessor(hub.db, hub.factory, hub.engine)
    processor.process_batch()              # one claimed batch; returns what it did
    processor.run(stop_event)              # until stop_event is set (crmhub serve runs workers so)

One claimed batch is one transaction: `inbox.claim` locks up to `batch_size` due rows (FOR
UPDATE SKIP LOCKED on PostgreSQL, so workers get disjoint rows), each row's connector turns its
event into pages per stream (`Connector.webhook_pages`), the pages of a stream are merged and
written through the stream's page writer (the same mapping, identity, ownership and activity
path as polled pages, `SyncEngine.writer_for`), and the rows are marked done, all in that one
transaction. A crash redoes the batch, never half of it.

Failures, like any record's:

- an event the connector cannot use (`SkippableRecord`, an unknown instance, any exception
  while turning it into pages) fails its inbox row: retried after `backoff`, dead after
  `max_attempts` (`inbox.mark_failed`; `inbox.requeue` replays dead letters);
- when the merged write of a batch fails, the batch is written again event by event (a
  savepoint each), so only the events that fail are retried;
- a record the mapping rejects goes to `hub.retry_queue` with its payload, as in a sync.

Order. Vendors do not deliver in order, and polling may have applied newer state already. Every
record carries its vendor-side version time (`RawRecord.updated_at`: a Stripe event's `created`).
Before writing, a record older than the version the entity last took from this connector
(`provenance._seen[connector]`, set by the page writer) is dropped, and so is one older than the
unlink of a deleted record. Within a batch the newest version of a record wins. A redelivery of
an applied event is then a no-op: equal version, equal values, nothing written or logged. A
version that changed nothing still advances `_seen` (the writer only notes versions that changed
something), and on PostgreSQL the guard locks the entity rows it reads, so two workers holding
versions of one record apply them one after the other (advisory locks per record, taken for
the whole batch in key order; see `_lock_records`). Stripe dates events to the second: two
versions in one second are applied in the order they are processed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, select, update

from hub.registry import ConnectorFactory
from hub.sdk.connector import Connector
from hub.sdk.types import Page, RawRecord
from hub.sync import TARGET_ORDER, SyncEngine
from hub.webhooks import inbox
from hub.writer import PageWriter
from state import repos
from state.bulk import Batch

__all__ = ["BatchResult", "InboxProcessor", "ProcessingStats", "ProcessorSettings"]

log = logging.getLogger("crmhub.webhooks.processor")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ProcessorSettings:
    batch_size: int = 500
    max_attempts: int = 5
    backoff: timedelta = timedelta(seconds=60)
    #: how long an idle worker waits before it looks at the inbox again
    idle_sleep: float = 0.2


@dataclass
class BatchResult:
    claimed: int = 0
    done: int = 0
    failed: int = 0  # inbox rows that failed this attempt (retried later, or now dead)
    records: int = 0  # records written (after the version guard)
    stale: int = 0  # records dropped as older than what was applied
    rejected: int = 0  # records sent to the retry queue
    split: bool = False  # the merged write failed and the batch went event by event
    #: per connector instance, for the stats once the batch is through
    records_by: Counter[str] = field(default_factory=Counter)
    stale_by: Counter[str] = field(default_factory=Counter)


@dataclass
class ProcessingStats:
    """Counters for /metrics, per connector instance; shared by a server's worker threads."""

    processed: Counter[str] = field(default_factory=Counter)  # rows done
    failed: Counter[str] = field(default_factory=Counter)  # failed attempts (each retry counts)
    stale: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, connector: str, *, done: int = 0, failed: int = 0, stale: int = 0, records: int = 0) -> None:
        with self.lock:
            if done:
                self.processed[connector] += done
            if failed:
                self.failed[connector] += failed
            if stale:
                self.stale[connector] += stale
            if records:
                self.records[connector] += records

    def batch(self, seconds: float) -> None:
        with self.lock:
            self.batches += 1
            self.seconds += seconds


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _mark_done(tx: Connection, ids: list[int], now: datetime) -> None:
    """`inbox.mark_done`; on PostgreSQL with one array parameter instead of one per id (500 bound
    parameters cost more to send than the update costs to run)."""
    if ids and tx.dialect.name == "postgresql":
        tx.exec_driver_sql("UPDATE hub.webhook_inbox SET status = 'done', processed_at = %s WHERE id = ANY(%s)",
                           (now, ids))
    else:
        inbox.mark_done(tx, ids, now)


def _seen_at(prov: Any, connector: str, external_id: str) -> datetime | None:
    """The version time of the record `external_id` as its entity last took it from `connector`."""
    seen = (prov.get("_seen") or {}).get(connector) if isinstance(prov, dict) else None
    if isinstance(seen, list) and len(seen) >= 2 and seen[0] == external_id:
        return _time(seen[1])
    return None


def _aware(t: Any) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        return _time(t)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class _Failed(Exception):
    """One inbox row cannot be turned into pages."""


class InboxProcessor:
    """Claims inbox rows and writes their events; safe to run in several threads and processes."""

    def __init__(self, db: Engine, factory: ConnectorFactory, engine: SyncEngine, *,
                 settings: ProcessorSettings | None = None, worker: str | None = None,
                 clock: Callable[[], datetime] | None = None, stats: ProcessingStats | None = None):
        self.db = db
        self.factory = factory
        self.engine = engine
        self.settings = settings or ProcessorSettings()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stats = stats if stats is not None else ProcessingStats()
        self._connectors: dict[str, Connector | None] = {}
        self._writers: dict[tuple[str, str], PageWriter] = {}

    # -- wiring ----------------------------------------------------------------------------------

    def _connector(self, name: str) -> Connector:
        if name not in self._connectors:
            try:
                self._connectors[name] = self.engine.build(name)
            except KeyError:
                self._connectors[name] = None
        conn = self._connectors[name]
        if conn is None:
            raise _Failed(f"no connector instance {name!r} in the config")
        return conn

    def _writer(self, conn: Connector, stream: str) -> PageWriter:
        key = (conn.name, stream)
        w = self._writers.get(key)
        if w is None:
            w = self._writers[key] = self.engine.writer_for(conn, stream)
        return w

    def close(self) -> None:
        for c in self._connectors.values():
            if c is not None:
                c.close()
        self._connectors.clear()

    # -- one batch -------------------------------------------------------------------------------

    def process_batch(self) -> BatchResult:
        """Claim a batch and process it in one transaction; an empty result when nothing is due."""
        started = time.perf_counter()
        res = BatchResult()
        now = self.clock()
        with self.db.begin() as tx:
            rows = inbox.claim(tx, self.settings.batch_size, self.worker, now)
            res.claimed = len(rows)
            if not rows:
                return res
            parsed: list[tuple[dict[str, Any], list[tuple[str, Page]]]] = []
            for row in rows:
                try:
                    parsed.append((row, self._pages(row)))
                except Exception as err:  # a connector's failure on one event fails that row only
                    self._fail(tx, row, err, now, res)
            if parsed:
                if tx.dialect.name == "postgresql":
                    # outside the savepoints: a rolled-back savepoint would release them, and the
                    # event-by-event retry would then take them one event at a time, out of order
                    self._lock_records(tx, self._groups(parsed))
                try:
                    with tx.begin_nested():
                        self._write(tx, parsed, now, res)
                    done = [row for row, _p in parsed]
                except Exception as err:
                    log.warning("inbox batch of %d failed (%s); writing it event by event", len(parsed), err)
                    self._writers.clear()  # their caches may hold ids of the rolled-back writes
                    res.split = True
                    res.records = res.stale = res.rejected = 0
                    res.records_by.clear()
                    res.stale_by.clear()
                    done = []
                    for row, pages in parsed:
                        try:
                            with tx.begin_nested():
                                self._write(tx, [(row, pages)], now, res)
                            done.append(row)
                        except Exception as one:
                            self._writers.clear()
                            self._fail(tx, row, one, now, res)
                _mark_done(tx, [r["id"] for r in done], now)
                res.done = len(done)
                for name, n in Counter(r["connector"] for r in done).items():
                    self.stats.add(name, done=n, records=res.records_by[name], stale=res.stale_by[name])
        self.stats.batch(time.perf_counter() - started)
        return res

    def _pages(self, row: dict[str, Any]) -> list[tuple[str, Page]]:
        body = row["body"]
        if not isinstance(body, dict | list):
            raise _Failed(f"inbox row {row['id']} holds no JSON event")
        conn = self._connector(row["connector"])
        if type(conn).webhook_pages is Connector.webhook_pages:
            # not "nothing to store": the kind cannot read events yet. Failing keeps the row (dead after
            # max_attempts), to be replayed with `inbox.requeue` once the connector can.
            raise _Failed(f"connector kind {type(conn).kind!r} does not process webhook events yet "
                          "(no Connector.webhook_pages); the event is kept for a replay")
        return conn.webhook_pages(body)  # type: ignore[arg-type]

    def _fail(self, tx: Connection, row: dict[str, Any], err: BaseException, now: datetime, res: BatchResult) -> None:
        reason = getattr(err, "reason", None) or str(err) or type(err).__name__
        inbox.mark_failed(tx, [row["id"]], f"{type(err).__name__}: {reason}", now,
                          max_attempts=self.settings.max_attempts, backoff=self.settings.backoff)
        res.failed += 1
        self.stats.add(row["connector"], failed=1)
        log.info("inbox row %s (%s %s) failed: %s", row["id"], row["connector"], row["event_id"], reason)

    def _write(self, tx: Connection, parsed: list[tuple[dict[str, Any], list[tuple[str, Page]]]], now: datetime,
               res: BatchResult) -> None:
        groups = self._groups(parsed)
        # referenced entities first (customers before their subscriptions), as a sync orders streams
        order = sorted(groups, key=lambda k: (self._rank(k), k))
        for name, stream in order:
            conn = self._connector(name)
            self._write_stream(tx, self._writer(conn, stream), groups[(name, stream)], now, res)

    @staticmethod
    def _groups(parsed: list[tuple[dict[str, Any], list[tuple[str, Page]]]]) -> dict[tuple[str, str], list[Page]]:
        groups: dict[tuple[str, str], list[Page]] = {}
        for row, pages in parsed:
            for stream, page in pages:
                groups.setdefault((row["connector"], stream), []).append(page)
        return groups

    def _lock_records(self, tx: Connection, groups: dict[tuple[str, str], list[Page]]) -> None:
        """Serialise workers on the records they share, until this transaction ends.

        Two workers holding events of one record (or of records referencing one customer) would
        otherwise both find it unlinked and both create it (a unique violation), or apply their
        versions in either order. A transaction-level advisory lock per (instance, entity,
        external id), including referenced ones, all taken in one statement in key order (so two
        workers cannot deadlock), makes the second wait until the first commits, then see its
        links and versions.
        """
        keys: set[str] = set()
        for (name, stream), pages in groups.items():
            try:
                writer = self._writer(self._connector(name), stream)
            except Exception:  # the write fails on it too, and fails those rows only
                continue
            refs = list(writer.mapping.references.values())
            for page in pages:
                for rec in page.records:
                    keys.add(f"{name}\0{writer.entity}\0{rec.external_id}")
                    for entity, get in refs:
                        ref = get(rec.data)
                        if ref not in (None, ""):
                            keys.add(f"{name}\0{entity}\0{ref}")
                for ext in page.deleted:
                    keys.add(f"{name}\0{writer.entity}\0{ext}")
        if keys:
            ids = sorted({int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big", signed=True)
                          for k in keys})
            tx.exec_driver_sql("SELECT count(pg_advisory_xact_lock(k)) FROM "
                               "(SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS keys", (ids,))

    def _rank(self, key: tuple[str, str]) -> int:
        conn = self._connector(key[0])
        try:
            return TARGET_ORDER.get(conn.stream(key[1]).target, 9)
        except KeyError:
            return 9

    def _write_stream(self, tx: Connection, writer: PageWriter, pages: list[Page], now: datetime,
                      res: BatchResult) -> None:
        # the newest version of a record last: the writer keeps the last of a page's duplicates
        records = sorted((r for p in pages for r in p.records), key=lambda r: _time(r.updated_at) or _EPOCH)
        deleted = list(dict.fromkeys(d for p in pages for d in p.deleted))
        rejected = [r for p in pages for r in p.rejected]
        records, stale = self._drop_stale(tx, writer, records)
        res.stale += stale
        batch = Batch(tx)
        outcome = writer.write(batch, writer.prepare(records), deleted, now, None)
        for r in rejected:
            outcome.failures.append({"external_id": r.external_id or f"unknown:{hash(str(r.payload))}",
                                     "payload": r.payload, "reason": r.reason})
        batch.flush()
        ok = set(outcome.succeeded_ids)
        self._advance_seen(tx, writer, [r for r in records if r.external_id in ok])
        if outcome.failures:
            repos.record_failures(tx, writer.connector, writer.stream, outcome.failures, now,
                                  self.engine.backoff, self.engine.max_attempts)
        res.records += len(outcome.succeeded_ids)
        res.rejected += len(outcome.failures)
        res.records_by[writer.connector] += len(outcome.succeeded_ids)
        res.stale_by[writer.connector] += stale

    def _versions(self, tx: Connection, table: Table, ids: list[str]) -> dict[str, Any]:
        """entity id -> its provenance, the rows locked until commit on PostgreSQL (in id order, so
        two workers cannot deadlock): a worker holding an older event of the same record waits,
        then reads the version the first one committed."""
        if not ids:
            return {}
        if tx.dialect.name == "postgresql":
            sql = (f"SELECT id, provenance FROM {table.schema}.{table.name} WHERE id = ANY(%s) "
                   "ORDER BY id FOR UPDATE")
            return {i: p for i, p in tx.exec_driver_sql(sql, (sorted(ids),)).fetchall()}
        out: dict[str, Any] = {}
        for part in repos.chunks(sorted(ids)):
            out.update((i, p) for i, p in tx.execute(select(table.c.id, table.c.provenance).where(table.c.id.in_(part))))
        return out

    def _drop_stale(self, tx: Connection, writer: PageWriter, records: list[RawRecord]) -> tuple[list[RawRecord], int]:
        """Records older than what their entity last took from this connector (see the module doc).

        Entities only: activities keep their versions by vendor time themselves (hub.activities).
        """
        if writer.table is None or not records:
            return records, 0
        links = repos.lookup_links(tx, writer.connector, writer.entity, list({r.external_id for r in records}))
        if not links:
            return records, 0
        current = self._versions(tx, writer.table, list({eid for eid, _d in links.values()}))
        kept: list[RawRecord] = []
        for rec in records:
            link = links.get(rec.external_id)
            at = _time(rec.updated_at)
            if link is None or at is None:
                kept.append(rec)
                continue
            eid, unlinked_at = link
            gone = _aware(unlinked_at)
            if gone is not None and at <= gone:
                continue  # deleted after this version was made
            last = _seen_at(current.get(eid), writer.connector, rec.external_id)
            if last is not None and at < last:
                continue  # an older version than the one applied: never roll back
            kept.append(rec)
        return kept, len(records) - len(kept)

    def _advance_seen(self, tx: Connection, writer: PageWriter, records: list[RawRecord]) -> None:
        """Record the version of records that changed nothing (the writer notes only those that
        did), so a late older event cannot slip under an unchanged newer one."""
        table = writer.table
        if table is None or not records:
            return
        newest: dict[str, tuple[datetime, str]] = {}
        for rec in records:
            at = _time(rec.updated_at)
            if at is not None and rec.updated_at and (rec.external_id not in newest or at > newest[rec.external_id][0]):
                newest[rec.external_id] = (at, rec.updated_at)
        links = repos.lookup_links(tx, writer.connector, writer.entity, list(newest))
        current = self._versions(tx, table, list({eid for eid, _d in links.values()}))
        updates = []
        for ext, (at, text) in newest.items():
            link = links.get(ext)
            if link is None or link[1] is not None or link[0] not in current:
                continue
            prov = current[link[0]]
            seen = (prov.get("_seen") or {}).get(writer.connector) if isinstance(prov, dict) else None
            if isinstance(seen, list) and seen and seen[0] != ext:
                continue  # another record of this connector speaks for the entity
            last = _seen_at(prov, writer.connector, ext)
            if last is None or at > last:
                prov = dict(prov) if isinstance(prov, dict) else {}
                prov["_seen"] = {**(prov.get("_seen") or {}), writer.connector: [ext, text]}
                updates.append({"eid": link[0], "prov": prov})
        if updates:
            tx.execute(update(table).where(table.c.id == bindparam("eid")).values(provenance=bindparam("prov")),
                       updates)

    # -- workers ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set; idle, wait `idle_sleep` (or until stopped)."""
        while not stop.is_set():
            try:
                res = self.process_batch()
            except Exception:
                log.exception("inbox processing failed; retrying in %.1fs", self.settings.idle_sleep)
                self._writers.clear()
                stop.wait(max(self.settings.idle_sleep, 1.0))
                continue
            if res.claimed < self.settings.batch_size:
                stop.wait(self.settings.idle_sleep)
        self.close()


def start_workers(n: int, make: Callable[[], InboxProcessor], stop: threading.Event) -> list[threading.Thread]:
    """`n` daemon threads, each with its own processor (connectors and writers are not shared)."""
    threads = []
    for i in range(n):
        proc = make()
        t = threading.Thread(target=proc.run, args=(stop,), name=f"inbox-processor-{i}", daemon=True)
        t.start()
        threads.append(t)
    return threads
