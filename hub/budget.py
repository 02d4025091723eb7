"""A request budget shared by every worker of a connector instance, through the database.

Each process paces itself with a local `TokenBucket` (vendor headers, pauses) and draws
the instance's tokens from one row of `hub.rate_budgets`, a chunk at a time, so the
budget holds across streams, processes and machines at the cost of one short statement
per `chunk` requests. A 429's pause is written there too: every worker waits it out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from hub.sdk.ratelimit import TokenBucket
from state import repos


class SharedBudget:
    """`RateBudget` for one connector instance, shared through `hub.rate_budgets`."""

    def __init__(self, engine: Engine, connector: str, rate: float, burst: int, *, chunk: int = 10,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.engine = engine
        self.connector = connector
        self.rate = rate
        self.burst = max(1, burst)
        self.chunk = max(1, min(chunk, self.burst))
        self.clock = clock
        self.sleep = sleep
        self.local = TokenBucket(None, self.burst, clock=clock, sleep=sleep)  # pacing and pauses only
        self._granted = 0
        self._lock = threading.Lock()

    def acquire(self, n: int = 1) -> None:
        with self._lock:
            while self._granted < n:
                with self.engine.begin() as c:
                    wait = repos.take_budget(c, self.connector, self.rate, self.burst, self.chunk, self.clock())
                self._granted += self.chunk
                if wait > 0:  # the shared bucket went into debt: this chunk is usable after `wait`
                    self.sleep(wait)
            self._granted -= n
        self.local.acquire(n)

    def observe(self, *, remaining: int | None, limit: int | None, window_s: float | None) -> None:
        self.local.observe(remaining=remaining, limit=limit, window_s=window_s)

    def pause(self, seconds: float) -> None:
        self.local.pause(seconds)
        with self.engine.begin() as c:
            repos.pause_budget(c, self.connector, self.clock() + seconds)
