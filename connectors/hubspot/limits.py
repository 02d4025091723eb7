"""HubSpot's rate limits, as the connector applies them.

- The burst window (`X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds`, e.g. 190 per
  10 s for a Professional private app) feeds the instance's shared request budget through
  `hub.sdk.http` (`RATE_HEADERS`): once the remaining share falls under the budget's low-water
  mark, requests are spread over the rest of the window, so the 429 never comes.
- The daily limit (`X-HubSpot-RateLimit-Daily/-Daily-Remaining`; absent on OAuth calls) is shared
  by every app of the account and resets at midnight in the account's time zone. `DailyLimit`
  reads it on every response and stops the connector with `RateLimited` (retry after the reset)
  when what is left falls to the configured reserve, leaving the rest to the account's other
  apps and people. A 429 whose body names `policyName: DAILY` is the same stop.
- Search (`POST .../search`) answers without these headers and has its own per-second limit;
  the budget's configured rate covers it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import orjson

from hub.sdk import RateLimited, RateLimitHeaders

__all__ = ["RATE_HEADERS", "DailyLimit"]

RATE_HEADERS = RateLimitHeaders(
    remaining="X-HubSpot-RateLimit-Remaining",
    limit="X-HubSpot-RateLimit-Max",
    interval_ms="X-HubSpot-RateLimit-Interval-Milliseconds",
    reset_epoch=None,
)
DAILY = "X-HubSpot-RateLimit-Daily"
DAILY_REMAINING = "X-HubSpot-RateLimit-Daily-Remaining"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class DailyLimit:
    """An httpx response hook that stops before the account's daily allowance is spent.

    `reserve` is the share of the daily limit left untouched (0.05: stop at 5 % left).
    """

    def __init__(self, reserve: float, timezone: str = "UTC", clock: Callable[[], datetime] | None = None) -> None:
        self.reserve = reserve
        self.zone = ZoneInfo(timezone)
        self._clock = clock or (lambda: datetime.now(self.zone))
        self.limit: int | None = None
        self.remaining: int | None = None

    def seconds_to_reset(self) -> float:
        now = self._clock().astimezone(self.zone)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1.0, (midnight - now).total_seconds())

    def __call__(self, response: httpx.Response) -> None:
        limit, remaining = _int(response.headers.get(DAILY)), _int(response.headers.get(DAILY_REMAINING))
        if limit is not None and remaining is not None:
            # This response is used as it is; `check` stops the next request if the reserve is reached.
            self.limit, self.remaining = limit, remaining
        if response.status_code == 429 and self._is_daily(response):
            raise RateLimited(f"HubSpot's daily request limit is spent (policy DAILY); it resets at midnight "
                              f"{self.zone.key}", retry_after=self.seconds_to_reset(), status=429)

    def check(self, _request: httpx.Request | None = None) -> None:
        """A request hook: raise `RateLimited` before a request when the reserve has been reached."""
        if self.limit is not None and self.remaining is not None and self.remaining <= self.limit * self.reserve:
            raise RateLimited(f"HubSpot daily limit: {self.remaining} of {self.limit} requests left, at or under "
                              f"the reserve of {self.reserve:.0%}; waiting for the reset at midnight {self.zone.key}",
                              retry_after=self.seconds_to_reset())

    @staticmethod
    def _is_daily(response: httpx.Response) -> bool:
        try:
            response.read()
            body = orjson.loads(response.content)
        except (orjson.JSONDecodeError, httpx.HTTPError):
            return False
        return isinstance(body, dict) and str(body.get("policyName", "")).upper() == "DAILY"
