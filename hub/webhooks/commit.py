"""Group commit: concurrent requests share one INSERT and one durable COMMIT.

A request hands its rows to `GroupCommitter.submit` and waits. With no commit in
flight the rows go at once (an idle server adds no latency). While one is in flight,
new rows accumulate: a further concurrent commit starts only when the oldest waiting
row has lingered `linger` seconds or `max_batch` rows are waiting, and when a commit
ends everything waiting goes in the next. So batches grow with the load, and so
does the work saved per event.

Each batch is written in a worker thread. On PostgreSQL every thread keeps one
connection with `synchronous_commit = on` and sends a single statement then COMMIT;
every waiting request is resolved only after that COMMIT returned. A failed batch
fails all its requests (they answer 503 and the vendor redelivers), except that a
batch with one event the database refuses is split, so the others still go through.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError

from hub.webhooks.inbox import InboxRow, insert_events, pg_insert

__all__ = ["BatchStats", "GroupCommitter", "write_batch"]

log = logging.getLogger("crmhub.webhooks")
#: the database refused an event itself (bad JSON, too long): retrying the same rows cannot help
DATA_ERRORS = (DataError, psycopg.DataError)
Keys = set[tuple[str, str]]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    max_rows: int = 0
    failed_batches: int = 0
    write_seconds: float = 0.0  # wall time in the writer threads (insert + durable commit)


@dataclass
class _Waiter:
    rows: Sequence[InboxRow]
    future: asyncio.Future[Keys]
    at: float


def write_batch(engine: Engine, rows: Sequence[InboxRow], retries: int = 2) -> Keys:
    """Insert `rows` through SQLAlchemy and commit durably; returns the new keys. (SQLite, and any engine.)"""
    for attempt in range(retries + 1):
        try:
            with engine.connect() as conn:
                lite = conn.dialect.name == "sqlite"
                if lite:  # WAL with synchronous=NORMAL survives a crash of the process, not of the machine
                    _sqlite_sync(conn, "FULL")
                try:
                    with conn.begin():
                        if conn.dialect.name == "postgresql":
                            conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                        return insert_events(conn, rows)
                finally:
                    if lite:
                        _sqlite_sync(conn, "NORMAL")  # the engine's setting, for the connection's next user
        except OperationalError as err:  # busy, deadlock, lost connection: try again
            if attempt == retries:
                raise
            log.warning("inbox batch of %d rows failed (%s); retrying", len(rows), err.orig)
    raise AssertionError("unreachable")


def _sqlite_sync(conn: Any, level: str) -> None:
    # On the driver connection, outside any transaction (SQLite ignores it inside one).
    conn.connection.driver_connection.execute(f"PRAGMA synchronous={level}")


class PgWriter:
    """One psycopg connection per writer thread, held for the server's life."""

    def __init__(self, engine: Engine, retries: int = 2):
        self.engine = engine
        self.retries = retries
        self._local = threading.local()
        self._open: list[Any] = []
        self._lock = threading.Lock()

    def _conn(self) -> Any:
        pooled = getattr(self._local, "conn", None)
        if pooled is None:
            pooled = self.engine.raw_connection()
            driver: Any = pooled.driver_connection
            # Session-wide, once: the pool may hand over a connection a sync run relaxed
            # (state.repos.relax_commits), and an acknowledgement promises durability.
            driver.execute("SET synchronous_commit = on")
            driver.commit()
            self._local.conn = pooled
            with self._lock:
                self._open.append(pooled)
        return pooled

    def _drop(self, pooled: Any) -> None:
        self._local.conn = None
        with self._lock:
            if pooled in self._open:
                self._open.remove(pooled)
        pooled.invalidate()

    def write(self, rows: Sequence[InboxRow]) -> Keys:
        for attempt in range(self.retries + 1):
            pooled = self._conn()
            driver: Any = pooled.driver_connection
            try:
                new = pg_insert(driver, rows)
                driver.commit()
                return new
            except psycopg.OperationalError as err:  # deadlock, serialization, lost connection
                if driver.closed or driver.broken:
                    self._drop(pooled)
                else:
                    driver.rollback()
                if attempt == self.retries:
                    raise
                log.warning("inbox batch of %d rows failed (%s); retrying", len(rows), err)
            except BaseException:
                if not driver.closed:
                    driver.rollback()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for pooled in conns:
            pooled.close()


class GroupCommitter:
    """Batches `submit`ted rows into shared commits; bound to the event loop it is first used on."""

    def __init__(self, engine: Engine, *, max_batch: int = 1000, max_inflight: int | None = None,
                 linger: float = 0.002):
        self.engine = engine
        self.max_batch = max_batch
        self.linger = linger
        pg = engine.dialect.name == "postgresql"
        # SQLite has a single writer: more slots would only queue on its lock.
        self.max_inflight = max_inflight or (4 if pg else 1)
        self.stats = BatchStats()
        self._pg = PgWriter(engine) if pg else None
        self._queue: deque[_Waiter] = deque()
        self._queued_rows = 0
        self._inflight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="inbox-commit")

    def _writer(self) -> Callable[[Sequence[InboxRow]], Keys]:
        if self._pg is not None:
            return self._pg.write
        return lambda rows: write_batch(self.engine, rows)

    async def submit(self, rows: Sequence[InboxRow]) -> Keys:
        """Store `rows` durably; returns the keys that were new (the rest were already stored)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(rows, loop.create_future(), loop.time())
        # mark a failure as seen even when its request has gone (no "exception never retrieved")
        waiter.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(waiter)
        self._queued_rows += len(rows)
        self._pump()
        # shield: a client that hangs up must not cancel a batch others are waiting on
        return await asyncio.shield(waiter.future)

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and self._inflight < self.max_inflight:
            if self._inflight and self._queued_rows < self.max_batch:
                wait = self._queue[0].at + self.linger - loop.time()
                if wait > 0:  # a commit is running: let this batch fill a little
                    if self._timer is None:
                        self._timer = loop.call_later(wait, self._on_timer)
                    return
            batch: list[_Waiter] = []
            n = 0
            while self._queue and (not batch or n + len(self._queue[0].rows) <= self.max_batch):
                w = self._queue.popleft()
                batch.append(w)
                n += len(w.rows)
            self._queued_rows -= n
            self._inflight += 1
            task = loop.create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _flush(self, batch: list[_Waiter]) -> None:
        loop = asyncio.get_running_loop()
        write = self._writer()
        rows = [r for w in batch for r in w.rows]
        try:
            try:
                started = time.perf_counter()
                new = await loop.run_in_executor(self._pool, write, rows)
                self.stats.write_seconds += time.perf_counter() - started
                _resolve(batch, new)
            except DATA_ERRORS:
                if len(batch) == 1:
                    raise
                # one event the database refuses must not fail its neighbours: each request alone
                for w in batch:
                    try:
                        _resolve([w], await loop.run_in_executor(self._pool, write, w.rows))
                    except DATA_ERRORS as err:
                        self.stats.failed_batches += 1
                        _fail([w], err)
        except Exception as err:
            self.stats.failed_batches += 1
            log.error("inbox batch of %d rows failed: %s", len(rows), err)
            _fail(batch, err)
        finally:
            self._inflight -= 1
            self.stats.batches += 1
            self.stats.rows += len(rows)
            self.stats.max_rows = max(self.stats.max_rows, len(rows))
            self._pump()

    async def drain(self) -> None:
        """Wait until every submitted row is committed (or failed)."""
        while self._queue or self._tasks:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(self.linger)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._pg is not None:
            self._pg.close()


def _resolve(batch: list[_Waiter], new: Keys) -> None:
    for w in batch:
        if not w.future.done():
            w.future.set_result({r.key for r in w.rows} & new)


def _fail(batch: list[_Waiter], err: BaseException) -> None:
    for w in batch:
        if not w.future.done():
            w.future.set_exception(err)
