"""TokenBucket on a fake clock: sleeping advances the clock, nothing really waits."""

from __future__ import annotations

import threading

import pytest

from hub.sdk.ratelimit import RateBudget, TokenBucket


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.start = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the bucket must never ask for a zero or negative sleep"
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    @property
    def elapsed(self) -> float:
        return self.now - self.start


def bucket(clock: FakeClock, rate: float | None = 10, burst: int = 10) -> TokenBucket:
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)


def test_token_bucket_is_a_rate_budget() -> None:
    assert isinstance(bucket(FakeClock()), RateBudget)


def test_burst_goes_at_once_then_the_next_waits_one_token() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=10, burst=10)
    for _ in range(10):
        b.acquire()
    assert clock.sleeps == []
    b.acquire()
    assert clock.elapsed == pytest.approx(0.1)


def test_steady_state_follows_the_rate() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=10, burst=10)
    for _ in range(30):
        b.acquire()
    # 10 from the burst, 20 more at 10/s
    assert clock.elapsed == pytest.approx(2.0)


def test_idle_time_refills_but_never_beyond_burst() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=10, burst=5)
    for _ in range(5):
        b.acquire()
    clock.now += 100  # long idle: refills to 5, not 1000
    for _ in range(5):
        b.acquire()
    assert clock.sleeps == []
    b.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


def test_pause_makes_the_next_acquire_wait() -> None:
    clock = FakeClock()
    b = bucket(clock)
    b.pause(2)
    b.acquire()
    assert clock.elapsed == pytest.approx(2.0)
    b.acquire()  # pause over, tokens left
    assert clock.elapsed == pytest.approx(2.0)


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    clock = FakeClock()
    b = bucket(clock)
    b.pause(5)
    b.pause(1)
    b.acquire()
    assert clock.elapsed == pytest.approx(5.0)


def test_unlimited_rate_never_waits_but_honours_pauses() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=None, burst=1)
    for _ in range(1000):
        b.acquire()
    assert clock.sleeps == []
    b.pause(3)
    b.acquire()
    assert clock.elapsed == pytest.approx(3.0)
    assert bucket(clock, rate=0).rate is None


def test_low_remaining_spreads_requests_over_the_window() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=None, burst=1)
    b.observe(remaining=2, limit=100, window_s=10)
    b.acquire()
    assert clock.elapsed == pytest.approx(5.0)  # window / remaining
    b.acquire()
    assert clock.elapsed == pytest.approx(10.0)
    b.acquire()  # the window the vendor spoke of is over
    assert clock.elapsed == pytest.approx(10.0)


def test_pacing_also_applies_with_a_rate() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=10, burst=10)
    b.observe(remaining=4, limit=100, window_s=10)
    b.acquire()
    b.acquire()
    assert clock.elapsed == pytest.approx(5.0)


def test_zero_remaining_waits_the_whole_window() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=None, burst=1)
    b.observe(remaining=0, limit=100, window_s=10)
    b.acquire()
    assert clock.elapsed == pytest.approx(10.0)


def test_plenty_remaining_does_not_slow_down_and_lifts_pacing() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=None, burst=1)
    b.observe(remaining=50, limit=100, window_s=10)
    for _ in range(20):
        b.acquire()
    assert clock.sleeps == []
    b.observe(remaining=1, limit=100, window_s=10)
    b.observe(remaining=60, limit=100, window_s=10)  # the vendor has room again
    b.acquire()
    assert clock.sleeps == []


def test_observation_without_window_or_remaining_is_ignored() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=None, burst=1)
    b.observe(remaining=1, limit=100, window_s=None)
    b.observe(remaining=None, limit=100, window_s=10)
    b.acquire()
    assert clock.sleeps == []


def test_request_larger_than_burst_does_not_wait_forever() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=10, burst=2)
    b.acquire(5)
    assert clock.sleeps == []
    b.acquire()  # the 3 borrowed tokens plus this one: 0.4 s at 10/s
    assert clock.elapsed == pytest.approx(0.4)


def test_threads_share_an_unlimited_bucket() -> None:
    b = TokenBucket(None, 1)
    counts = [0] * 4
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(200):
                b.acquire()
                counts[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sum(counts) == 800


def test_threads_never_overdraw_a_limited_bucket() -> None:
    clock = FakeClock()
    b = bucket(clock, rate=100, burst=5)
    granted = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            b.acquire()
            with lock:
                granted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(granted) == 200
    # 5 from the burst, 195 more at 100/s: at least 1.95 s must have passed on the clock.
    assert clock.elapsed >= 1.95 - 1e-6
