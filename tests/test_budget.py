"""The request budget of a connector instance holds across workers: they draw from one row."""

from __future__ import annotations

from hub.budget import SharedBudget
from state.db import make_engine


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def test_two_workers_share_one_budget(db_url: str) -> None:
    eng = make_engine(db_url)
    t = FakeTime()
    a = SharedBudget(eng, "hubspot_main", rate=10, burst=10, chunk=5, clock=t.clock, sleep=t.sleep)
    b = SharedBudget(eng, "hubspot_main", rate=10, burst=10, chunk=5, clock=t.clock, sleep=t.sleep)
    start = t.now
    for i in range(60):
        (a if i % 2 else b).acquire()
    # 60 requests at 10/s with a burst of 10: at least 5 s, whichever worker sent them
    assert t.now - start >= (60 - 10) / 10 - 1e-6
    # a third budget for another instance is not slowed by this one
    other = SharedBudget(eng, "hubspot_other", rate=10, burst=10, chunk=5, clock=t.clock, sleep=t.sleep)
    before = t.now
    for _ in range(10):
        other.acquire()
    assert t.now == before
    eng.dispose()


def test_a_pause_reaches_the_other_worker(db_url: str) -> None:
    eng = make_engine(db_url)
    t = FakeTime()
    a = SharedBudget(eng, "hs", rate=100, burst=10, chunk=1, clock=t.clock, sleep=t.sleep)
    b = SharedBudget(eng, "hs", rate=100, burst=10, chunk=1, clock=t.clock, sleep=t.sleep)
    a.acquire()
    a.pause(30)  # a 429 with Retry-After: 30 seen by worker a
    before = t.now
    b.acquire()
    assert t.now - before >= 30 - 1e-6
    eng.dispose()
