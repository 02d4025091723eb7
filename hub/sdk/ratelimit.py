"""Client-side rate budgets shared by every stream of one connector instance.

A connector instance gets one budget; the HTTP transport calls it on every
attempt:

    budget.acquire()                 before sending (blocks until the request may go)
    budget.observe(remaining=...)    after a response carrying the vendor's budget headers
    budget.pause(seconds)            after a 429 with Retry-After: every user waits

`TokenBucket` is the implementation: a token bucket for the configured rate,
plus pacing from the vendor's own headers so the hub slows down *before* the
vendor answers 429, plus a shared pause. Clock and sleep are injected so tests
run on a fake clock and never really sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["RateBudget", "TokenBucket"]


@runtime_checkable
class RateBudget(Protocol):
    """What the HTTP transport needs from a rate limiter."""

    def acquire(self, n: int = 1) -> None:
        """Block until `n` requests may be sent."""
        ...

    def observe(self, *, remaining: int | None, limit: int | None, window_s: float | None) -> None:
        """The vendor said `remaining` of `limit` requests are left for the next `window_s` seconds."""
        ...

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds` (the vendor answered 429 with Retry-After)."""
        ...


class TokenBucket:
    """A thread-safe token bucket with vendor-driven pacing and a shared pause.

    `rate` tokens per second refill a bucket of at most `burst` tokens; `rate`
    of None or <= 0 means no client-side rate (pauses and observations still
    apply). `low_water` is the fraction of the vendor's limit below which
    observations start pacing: the remaining requests are spread evenly over
    the window, so the last one goes as the window ends instead of hitting 429.

        bucket = TokenBucket(rate=10, burst=10)     # 100 requests / 10 s
        bucket.acquire()
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_last",
        "_lock",
        "_low_water",
        "_pace_interval",
        "_pace_next",
        "_pace_until",
        "_paused_until",
        "_rate",
        "_sleep",
        "_tokens",
    )

    def __init__(
        self,
        rate: float | None,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        low_water: float = 0.1,
    ) -> None:
        self._rate: float = float(rate) if rate is not None and rate > 0 else 0.0
        self._burst = max(1, int(burst))
        self._clock = clock
        self._sleep = sleep
        self._low_water = low_water
        self._lock = threading.Lock()
        self._tokens: float = float(self._burst)
        self._last = clock()
        self._paused_until = float("-inf")
        # Pacing from vendor headers: one request every `_pace_interval` seconds
        # until `_pace_until`; `_pace_next` is the earliest start of the next one.
        self._pace_interval = 0.0
        self._pace_until = float("-inf")
        self._pace_next = float("-inf")

    @property
    def rate(self) -> float | None:
        return self._rate or None

    def acquire(self, n: int = 1) -> None:
        rate = self._rate
        # A request larger than the bucket waits for a full bucket, then borrows
        # the rest (tokens go negative), so it cannot wait forever.
        need = min(n, self._burst)
        while True:
            with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                if now < self._pace_until:
                    wait = max(wait, self._pace_next - now)
                if rate:
                    tokens = min(self._burst, self._tokens + (now - self._last) * rate)
                    self._tokens = tokens
                    self._last = now
                    if tokens < need - 1e-9:
                        wait = max(wait, (need - tokens) / rate)
                if wait <= 0:
                    if rate:
                        self._tokens -= n
                    if now < self._pace_until:
                        self._pace_next = max(now, self._pace_next) + self._pace_interval * n
                    return
            # Never sleep holding the lock: other threads must still observe/pause.
            # Re-check after waking: a pause or observation may have arrived meanwhile.
            self._sleep(wait)

    def observe(self, *, remaining: int | None, limit: int | None, window_s: float | None) -> None:
        if remaining is None or window_s is None or window_s <= 0:
            return
        low = limit is None or remaining <= limit * self._low_water
        with self._lock:
            now = self._clock()
            if not low:
                # The vendor has room again: drop any pacing set by an earlier observation.
                self._pace_until = float("-inf")
                return
            interval = window_s / max(remaining, 1)
            self._pace_interval = interval
            self._pace_until = now + window_s
            # The observation follows a request that already went; the next one waits a slot.
            self._pace_next = now + interval

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
