"""Talking to Salesforce's REST API: the session (where and as whom), requests, error bodies, limits.

Salesforce answers errors as a JSON list ``[{"message": ..., "errorCode": ...}]``; the code says
how to recover, whatever the status:

    REQUEST_LIMIT_EXCEEDED (403)        RateLimited: the org's daily API budget is spent
    INVALID_SESSION_ID (401)            AuthError: the token expired or was revoked (refresh it)
    INVALID_QUERY_LOCATOR (400)         LocatorExpired: restart the query from the last checkpoint
    INVALID_REPLICATION_DATE (400)      CursorExpired: the delete window has passed (full resync)
    anything else                       the SDK's mapping (429/5xx retriable, 4xx fatal)

Every response carries ``Sforce-Limit-Info: api-usage=N/M`` (the org's rolling 24-hour usage);
it is fed to the connector's request budget so the hub slows down before the org runs out.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from hub.sdk import (
    AuthError,
    CursorExpired,
    FatalError,
    RateBudget,
    RateLimited,
    Redactor,
    raise_for_status,
)

__all__ = ["LIMIT_HEADER", "ApiUsage", "LocatorExpired", "SalesforceApi", "Session", "parse_limit_info"]

LIMIT_HEADER = "Sforce-Limit-Info"
# the org's usage; `per-app-api-usage=17/250(appName=...)` (a connected app's own cap) is another key
_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_BODY_CHARS = 300


class LocatorExpired(FatalError):
    """A `nextRecordsUrl` Salesforce no longer knows (INVALID_QUERY_LOCATOR): re-query from the keyset."""


@dataclass(frozen=True, slots=True)
class Session:
    """Where the org is and how to authenticate: the one thing OAuth has to provide.

    `instance_url` comes from the token response (a My Domain host); `auth` is an `httpx.Auth`
    (an OAuth2 flow with refresh) or None with a static bearer in `headers`.
    """

    instance_url: str
    api_version: str
    headers: dict[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None
    secrets: tuple[str, ...] = ()

    @property
    def data_path(self) -> str:
        return f"/services/data/{self.api_version}"


@dataclass(frozen=True, slots=True)
class ApiUsage:
    used: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """``api-usage=10018/100000`` (newer orgs add ``; api-bursts=1/750``) -> ApiUsage(10018, 100000)."""
    if not value:
        return None
    m = _USAGE.search(value)
    return ApiUsage(int(m.group(1)), int(m.group(2))) if m else None


def parse_sf_datetime(value: str) -> datetime:
    """Salesforce datetimes (``2024-06-01T12:00:00.000+0000``) as aware UTC datetimes."""
    s = value.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    elif len(s) > 5 and s[-5] in "+-" and s[-4:].isdigit():
        s = f"{s[:-2]}:{s[-2:]}"
    d = datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _error_items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        body = [body]
    return [b for b in body if isinstance(b, dict)] if isinstance(body, list) else []


class SalesforceApi:
    """Requests through the SDK's client, with Salesforce's error codes and limit header understood."""

    def __init__(self, client: httpx.Client, session: Session, budget: RateBudget | None,
                 *, limit_window_s: float, min_remaining: int) -> None:
        self.client = client
        self.session = session
        self.budget = budget
        self.limit_window_s = limit_window_s
        self.min_remaining = min_remaining
        self.usage: ApiUsage | None = None
        #: the vendor's clock at the last response (its Date header), for windows on its time
        self.server_now: datetime | None = None
        found = getattr(client, "redactor", None)
        self.redactor = found if isinstance(found, Redactor) else Redactor(session.secrets)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        usage = self.usage
        if self.min_remaining and usage is not None and usage.remaining <= self.min_remaining:
            # Leave the org's last calls to its other integrations: stop before sending, resume later
            # (checked before a call, never after one, so a write's results are never dropped).
            raise RateLimited(f"Salesforce API usage {usage.used}/{usage.limit}: at or below the "
                              f"{self.min_remaining} calls kept in reserve (min_api_remaining)",
                              retry_after=self.limit_window_s / max(usage.limit, 1))
        resp = self.client.request(method, url, **kwargs)
        self._observe(resp)
        if not 200 <= resp.status_code < 300:
            self._raise(resp)
        return resp

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.parse(self.request(method, url, **kwargs))

    def parse(self, resp: httpx.Response) -> Any:
        """The body as JSON, or a clear error when it is not (an HTML login or proxy page)."""
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            kind = resp.headers.get("content-type", "no content type")
            raise FatalError(f"Salesforce answered {resp.request.method} {self._where(resp)} with "
                             f"{resp.status_code} and a body that is not JSON ({kind}): {self._excerpt(resp)!r}"
                             ) from None

    # -- limits ----------------------------------------------------------------------------------

    def _observe(self, resp: httpx.Response) -> None:
        date = resp.headers.get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self.server_now = parsedate_to_datetime(date).astimezone(UTC)
        usage = parse_limit_info(resp.headers.get(LIMIT_HEADER))
        if usage is None:
            return
        self.usage = usage
        if self.budget is not None:
            # The daily budget is a rolling 24 hours: once below the budget's low-water mark, the
            # remaining calls are spread over the window instead of being spent at once.
            self.budget.observe(remaining=usage.remaining, limit=usage.limit, window_s=self.limit_window_s)

    # -- errors ----------------------------------------------------------------------------------

    def _raise(self, resp: httpx.Response) -> None:
        try:
            items = _error_items(orjson.loads(resp.content))
        except orjson.JSONDecodeError:
            items = []
        codes = [str(i.get("errorCode") or "") for i in items]
        message = f"Salesforce {resp.request.method} {self._where(resp)} -> {resp.status_code}: " + (
            "; ".join(f"{c}: {self.redactor.redact(str(i.get('message', '')))}" for c, i in zip(codes, items, strict=True))
            or self._excerpt(resp))
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            raise RateLimited(message, retry_after=None, status=resp.status_code)
        if "INVALID_QUERY_LOCATOR" in codes:
            raise LocatorExpired(message)
        if "INVALID_REPLICATION_DATE" in codes:
            raise CursorExpired(message)
        if resp.status_code == 401 or "INVALID_SESSION_ID" in codes:
            raise AuthError(message)
        if resp.status_code in (429,) or resp.status_code >= 500:
            raise_for_status(resp, self.redactor)
        if resp.status_code == 403:
            raise AuthError(message)
        raise FatalError(message)

    def _where(self, resp: httpx.Response) -> str:
        # a SOQL URL can run to kilobytes: enough of it to recognise the query
        where = self.redactor.redact_url(resp.request.url)
        return where if len(where) <= 240 else where[:240] + "..."

    def _excerpt(self, resp: httpx.Response) -> str:
        # redact before cutting: a secret cut in half would no longer match
        text = " ".join(self.redactor.redact(resp.text[:65536]).split())
        return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "..."
