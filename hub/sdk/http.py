"""The one HTTP seam every connector uses.

A connector gets its client from `build_client` and never builds an
`httpx.Client` itself, so retries, rate budgets, timeouts and redaction are
the same everywhere:

    from hub.sdk.http import RateLimitHeaders, build_client, raise_for_status
    from hub.sdk.ratelimit import TokenBucket

    HUBSPOT_RATE_HEADERS = RateLimitHeaders(          # vendor facts live in the connector
        remaining="X-HubSpot-RateLimit-Remaining",
        limit="X-HubSpot-RateLimit-Max",
        interval_ms="X-HubSpot-RateLimit-Interval-Milliseconds",
        reset_epoch=None,
    )
    client = build_client(
        base_url="https://api.hubapi.com",
        headers={"Authorization": f"Bearer {token}"},
        budget=TokenBucket(rate=10, burst=10),        # one per connector instance, shared by streams
        rate_headers=HUBSPOT_RATE_HEADERS,
        secrets=[token],
    )
    page = raise_for_status(client.get("/crm/v3/objects/contacts", params={"limit": 100})).json()

    # A POST the vendor treats as a read (search) may be retried on 5xx too:
    client.post("/crm/v3/objects/contacts/search", json=body, extensions={IDEMPOTENT: True})

What happens on each attempt (`RetryingTransport`): `budget.acquire()`, send,
feed the vendor's rate headers to `budget.observe(...)`. A retry status
(429, 5xx) or a transport error is retried with `Retry-After` honoured exactly
(seconds or HTTP date) or else capped exponential backoff with full jitter; a
429 also pauses the whole budget. POST/PATCH are retried on 5xx and on errors
after the request may have been sent only when idempotent (an
`Idempotency-Key` header or the `IDEMPOTENT` extension); a 429 and a connect
error are always retried, since the vendor never processed the request.

When attempts run out the last response is returned, so the caller sees it;
`raise_for_status` turns it into the error type that carries its recovery
(`hub.sdk.errors`). Transport errors become `RetriableError`.

Tests swap the inner transport rather than monkeypatching:

    client = build_client(transport=httpx.MockTransport(handler), sleep=sleeps.append,
                          jitter=lambda lo, hi: hi)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import tenacity

from hub.sdk.errors import AuthError, FatalError, RateLimited, RetriableError
from hub.sdk.ratelimit import RateBudget
from hub.sdk.redact import SECRET_PARAMS, Redactor

__all__ = [
    "IDEMPOTENT",
    "HubClient",
    "RateLimitHeaders",
    "RetryPolicy",
    "RetryingTransport",
    "build_client",
    "parse_retry_after",
    "raise_for_status",
]

logger = logging.getLogger(__name__)

#: Request extension marking a POST/PATCH as safe to repeat (e.g. a search).
IDEMPOTENT = "crmhub.idempotent"
_REDACTOR_EXT = "crmhub.redactor"
_RETRY_AFTER_EXT = "crmhub.retry_after"  # on a returned 429/5xx: the vendor's wait hint, in seconds

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# The request never left: safe to retry whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Transient network trouble; UnsupportedProtocol/LocalProtocolError are our bugs and are not retried.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
_BODY_CHARS = 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry. Delays are in seconds."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    #: A Retry-After above this is not slept: the response is returned and
    #: `raise_for_status` raises with `retry_after` set, for the engine to schedule.
    max_retry_after: float = 300.0


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """Names of a vendor's rate-limit headers (None where the vendor sends none)."""

    remaining: str | None
    limit: str | None
    interval_ms: str | None
    reset_epoch: str | None  # UNIX time the window resets (e.g. X-AircallApi-Reset)
    retry_after: str = "Retry-After"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _to_int(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def _with_request_secrets(redactor: Redactor, request: httpx.Request) -> Redactor:
    """Add what this request itself carries: an Authorization set by an `httpx.Auth` flow
    (never seen by build_client) and secret query parameters, which a vendor may echo in a body."""
    found = [v for k, v in request.url.params.multi_items() if k.lower() in SECRET_PARAMS]
    for name in ("authorization", "x-api-key"):
        value = request.headers.get(name)
        if value:
            found += [value, value.partition(" ")[2]]
    return redactor.extended(*found) if found else redactor


def _is_idempotent(request: httpx.Request) -> bool:
    return (
        request.method in _IDEMPOTENT_METHODS
        or "idempotency-key" in request.headers
        or bool(request.extensions.get(IDEMPOTENT))
    )


class RetryingTransport(httpx.BaseTransport):
    """Wraps a transport with the rate budget and the retry policy (see the module docstring)."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        policy: RetryPolicy = RetryPolicy(),
        budget: RateBudget | None = None,
        rate_headers: RateLimitHeaders | None = None,
        redactor: Redactor | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.policy = policy
        self.budget = budget
        self.rate_headers = rate_headers
        self.redactor = redactor if redactor is not None else Redactor()
        self._jitter = jitter  # its own seam "to isolate randomness for tests" (stripe-python)
        self._wall_clock = wall_clock
        names = rate_headers
        self._wanted: dict[bytes, int] = {
            name.lower().encode("latin-1"): i
            for i, name in enumerate(
                (names.remaining, names.limit, names.interval_ms, names.reset_epoch) if names else ()
            )
            if name
        }
        # One Retrying for all requests: tenacity keeps per-call state in RetryCallState
        # and its statistics thread-locally, so it is safe to share between threads.
        self._retrying = tenacity.Retrying(
            retry=self._should_retry,
            stop=self._should_stop,
            wait=self._delay,
            sleep=sleep,
            before_sleep=self._before_sleep,
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None,
        )

    # -- one attempt ---------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions.setdefault(_REDACTOR_EXT, self.redactor)
        # The first attempt runs outside tenacity: most requests need no retry, and
        # tenacity's per-call bookkeeping would cost ~20 µs on every page.
        first: httpx.Response | httpx.TransportError
        try:
            first = self._attempt(request)
        except httpx.TransportError as exc:
            if not self._retryable(request, exc):
                raise self._wrap(request, exc, attempts=1) from exc
            first = exc
        else:
            if first.status_code not in self.policy.retry_statuses:
                return first
            if not self._retryable(request, first):
                return self._with_hint(first)

        replay = [first]

        def attempt(req: httpx.Request) -> httpx.Response:
            if replay:  # tenacity's first attempt is the one already made
                outcome = replay.pop()
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome
            return self._attempt(req)

        try:
            response: httpx.Response = self._retrying(attempt, request)
        except httpx.TransportError as exc:
            raise self._wrap(request, exc, self._retrying.statistics.get("attempt_number", 1)) from exc
        return self._with_hint(response)

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        budget = self.budget
        if budget is not None:
            budget.acquire()
        response = self.inner.handle_request(request)
        if budget is not None and self._wanted:
            self._observe(budget, response.headers)
        return response

    def _observe(self, budget: RateBudget, headers: httpx.Headers) -> None:
        # One pass over the raw headers: three Headers.get() calls cost three times as much.
        found: list[bytes | None] = [None, None, None, None]
        wanted = self._wanted
        for key, value in headers.raw:
            i = wanted.get(key.lower())
            if i is not None:
                found[i] = value
        remaining = _to_int(found[0])
        if remaining is None:
            return
        window: float | None = None
        interval = _to_int(found[2])
        if interval is not None:
            window = interval / 1000.0
        else:
            reset = _to_int(found[3])
            if reset is not None:
                window = max(0.0, reset - self._wall_clock())
        budget.observe(remaining=remaining, limit=_to_int(found[1]), window_s=window)

    def _retryable(self, request: httpx.Request, outcome: httpx.Response | BaseException) -> bool:
        if isinstance(outcome, BaseException):
            if isinstance(outcome, _NOT_SENT):
                return True
            return isinstance(outcome, _TRANSIENT) and _is_idempotent(request)
        status = outcome.status_code
        if status not in self.policy.retry_statuses:
            return False
        # 429: the vendor did not process the request, so any method may repeat.
        return status == 429 or _is_idempotent(request)

    def _with_hint(self, response: httpx.Response) -> httpx.Response:
        if response.status_code in self.policy.retry_statuses:
            # Vendor-specific hint (header name, reset epoch) for raise_for_status, which knows neither.
            hint = self._retry_after(response)
            if hint is not None:
                response.extensions[_RETRY_AFTER_EXT] = hint
        return response

    def _wrap(self, request: httpx.Request, exc: httpx.TransportError, attempts: int) -> Exception:
        if not isinstance(exc, _TRANSIENT):
            return FatalError(self._describe(request, exc, "not retried"))
        if attempts == 1 and not self._retryable(request, exc):
            return RetriableError(self._describe(request, exc, "not retried: not idempotent"))
        return RetriableError(self._describe(request, exc, f"after {attempts} attempt(s)"))

    # -- tenacity callbacks -------------------------------------------------

    def _should_retry(self, rs: tenacity.RetryCallState) -> bool:
        outcome = rs.outcome
        if outcome is None:
            return False
        request: httpx.Request = rs.args[0]
        if outcome.failed:
            exc = outcome.exception()
            return exc is not None and self._retryable(request, exc)
        return self._retryable(request, outcome.result())

    def _retry_after(self, response: httpx.Response) -> float | None:
        names = self.rate_headers
        header = names.retry_after if names is not None else "Retry-After"
        delay = parse_retry_after(response.headers.get(header), now=self._wall_clock())
        if delay is None and response.status_code == 429 and names is not None:
            reset = _to_int(response.headers.get(names.reset_epoch)) if names.reset_epoch else None
            if reset is not None:
                delay = max(0.0, reset - self._wall_clock())
        return delay

    def _should_stop(self, rs: tenacity.RetryCallState) -> bool:
        if rs.attempt_number >= self.policy.max_attempts:
            return True
        outcome = rs.outcome
        if outcome is not None and not outcome.failed:
            hint = self._retry_after(outcome.result())
            if hint is not None and hint > self.policy.max_retry_after:
                return True  # not worth blocking a thread: hand the 429/503 to the caller
        return False

    def _delay(self, rs: tenacity.RetryCallState) -> float:
        outcome = rs.outcome
        if outcome is not None and not outcome.failed:
            hint = self._retry_after(outcome.result())
            if hint is not None:
                return hint
        policy = self.policy
        if rs.attempt_number >= policy.max_attempts:
            return 0.0  # tenacity asks before it checks stop; this wait is never slept
        cap = min(policy.max_delay, policy.base_delay * 2 ** (rs.attempt_number - 1))
        return self._jitter(0.0, cap)

    def _before_sleep(self, rs: tenacity.RetryCallState) -> None:
        request: httpx.Request = rs.args[0]
        outcome = rs.outcome
        delay = rs.upcoming_sleep
        if outcome is None:
            return
        if outcome.failed:
            what = type(outcome.exception()).__name__
        else:
            response: httpx.Response = outcome.result()
            what = str(response.status_code)
            try:
                response.read()  # drain so the connection goes back to the pool
            except (httpx.HTTPError, httpx.StreamError):
                pass
            finally:
                response.close()
            if response.status_code == 429 and self.budget is not None:
                self.budget.pause(delay)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "retrying %s %s after %s in %.2fs (attempt %d of %d)",
                request.method,
                self.redactor.redact_url(request.url),
                what,
                delay,
                rs.attempt_number + 1,
                self.policy.max_attempts,
            )

    def _describe(self, request: httpx.Request, exc: Exception, how: str) -> str:
        redact = _with_request_secrets(self.redactor, request).redact
        return (
            f"{request.method} {redact(str(request.url))}: {type(exc).__name__}: {redact(str(exc))} ({how})"
        )

    def close(self) -> None:
        self.inner.close()


class HubClient(httpx.Client):
    """An `httpx.Client` that carries the `Redactor` for its secrets."""

    def __init__(self, *, redactor: Redactor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redactor = redactor

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = super().send(request, **kwargs)
        if response.is_closed:
            # httpx binds the response's stream back to the response (to time it): a reference
            # cycle, so a page's body (1.5 MB of calls) outlived its page until the cycle
            # collector ran. Once the body is read, a plain stream over it breaks the cycle.
            response.stream = httpx.ByteStream(response.content)
        return response


def build_client(
    *,
    base_url: str = "",
    auth: httpx.Auth | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    retry: RetryPolicy = RetryPolicy(),
    budget: RateBudget | None = None,
    rate_headers: RateLimitHeaders | None = None,
    secrets: Sequence[str] = (),
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[float, float], float] = random.uniform,
    user_agent: str = "crmhub/0.1",
    wall_clock: Callable[[], float] = time.time,
) -> HubClient:
    """The client every connector uses; `transport` is the seam tests replace.

    An `Authorization` value in `headers` is added to the secrets automatically.
    """
    merged = {"User-Agent": user_agent, **(headers or {})}
    redactor = Redactor(secrets)
    for name, value in merged.items():
        if name.lower() in ("authorization", "x-api-key"):
            redactor.add(value, value.partition(" ")[2])
    retrying = RetryingTransport(
        transport if transport is not None else httpx.HTTPTransport(),  # pooled: keep-alive
        policy=retry,
        budget=budget,
        rate_headers=rate_headers,
        redactor=redactor,
        sleep=sleep,
        jitter=jitter,
        wall_clock=wall_clock,
    )
    return HubClient(
        redactor=redactor,
        base_url=base_url,
        auth=auth,
        headers=merged,
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        transport=retrying,
    )


def _body_excerpt(response: httpx.Response, redactor: Redactor) -> str:
    try:
        response.read()
        text = response.text
    except (httpx.HTTPError, httpx.StreamError):
        return "<body unavailable>"
    # Redact before cutting: a secret cut in half would no longer match.
    text = redactor.redact(text[:65536])
    text = " ".join(text.split())
    return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "..."


def raise_for_status(response: httpx.Response, redactor: Redactor | None = None) -> httpx.Response:
    """Return a 2xx (or 304) response; raise the `hub.sdk.errors` type that carries the recovery otherwise.

    429 → RateLimited, 5xx → RetriableError (both with `retry_after` from the
    header, when given), 401/403 → AuthError, anything else → FatalError.
    Messages name method, redacted URL, status and the start of the redacted body.
    """
    status = response.status_code
    if 200 <= status < 300 or status == 304:
        return response
    try:
        request: httpx.Request | None = response.request
    except RuntimeError:
        request = None
    if redactor is None:
        found = request.extensions.get(_REDACTOR_EXT) if request is not None else None
        redactor = found if isinstance(found, Redactor) else Redactor()
    if request is not None:
        redactor = _with_request_secrets(redactor, request)
    where = f"{request.method} {redactor.redact_url(request.url)}" if request is not None else "request"
    message = f"{where} -> {status} {response.reason_phrase}: {_body_excerpt(response, redactor)}"
    if status == 429 or status >= 500:
        hint = response.extensions.get(_RETRY_AFTER_EXT)
        retry_after = (
            hint if isinstance(hint, float) else parse_retry_after(response.headers.get("Retry-After"))
        )
        cls = RateLimited if status == 429 else RetriableError
        raise cls(message, retry_after=retry_after, status=status)
    if status in (401, 403):
        raise AuthError(message)
    raise FatalError(message)
