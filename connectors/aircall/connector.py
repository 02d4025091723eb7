"""Aircall connector: `/v1/calls` read as call activities, plus `call.*` webhooks.

`from`/`to` filter on the call's creation time (UNIX seconds) and no query may page past
10,000 results, so a run walks *windows* from the cursor to now, oldest first (`order=asc`,
`per_page` 50, `meta.next_page_link`). A window whose first page says `meta.total` would pass
the cap is split in two and each half read in turn (recursively), so every query stays under it.

Calls change after they are created (answered, ended, recorded, tagged) and `from` cannot see
that, so calls seen unfinished, or ended less than `settle_seconds` before the read, are kept
in the cursor (`open`) and fetched again one by one (`GET /v1/calls/{id}`) on the next run;
the webhooks carry the rest.

Cursor (opaque to the engine)::

    {"since": <unix: the newest creation time read>, "seen": [ids created at `since`],
     "open": {id: created_at}}

The windows' lower bound is inclusive and overlaps by a second at each split, so a call is
read once: those at `since` already read are in `seen`. 429s are retried by the SDK client,
which waits for `X-AircallApi-Reset` when Aircall gives no `Retry-After`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.aircall.calls import call_activity, unix
from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorKind,
    FatalError,
    Page,
    RateLimitHeaders,
    RawRecord,
    Redactor,
    RejectedRecord,
    SkippableRecord,
    StreamSpec,
    build_client,
    raise_for_status,
)
from hub.sdk.activity import ActivityConnectorConfig

log = logging.getLogger("crmhub.connector.aircall")

API_BASE = "https://api.aircall.io"
MAX_PER_PAGE = 50
RESULT_CAP = 10_000  # results one query can page through
STREAM = "calls"
RATE_HEADERS = RateLimitHeaders(remaining="X-AircallApi-Remaining", limit="X-AircallApi-Limit",
                                interval_ms=None, reset_epoch="X-AircallApi-Reset")


class AircallAuth(BaseModel):
    """Basic with the company's API ID and token, or an OAuth access token (technology partners)."""

    model_config = ConfigDict(extra="forbid")
    api_id: str | None = None
    api_token: SecretStr | None = None
    access_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> AircallAuth:
        if self.access_token is None and not (self.api_id and self.api_token):
            raise ValueError("give api_id with api_token, or access_token")
        return self

    def secret(self) -> str:
        token = self.access_token or self.api_token
        assert token is not None
        return token.get_secret_value()


class AircallConfig(ActivityConnectorConfig):
    base_url: str = API_BASE
    auth: AircallAuth
    per_page: int = Field(MAX_PER_PAGE, ge=1, le=MAX_PER_PAGE)
    #: results one query may page through; windows are split to stay under it
    result_cap: int = Field(RESULT_CAP, ge=MAX_PER_PAGE)
    start_date: date | None = None
    lookback_days: int = Field(30, ge=0)
    #: calls that ended less than this before a read are fetched again on the next run
    settle_seconds: int = Field(600, ge=0)
    #: Aircall publishes 60/min and 120/min in different places; the headers pace the rest
    requests_per_second: float | None = Field(None, gt=0)
    timeout_seconds: float = 30.0


class AircallConnector(Connector):
    kind = "aircall"
    Config = AircallConfig
    default_rate: ClassVar[float | None] = 1.0
    default_burst: ClassVar[int] = 5

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, AircallConfig)
        self.cfg: AircallConfig = config
        self._client: httpx.Client | None = None
        self.clock: Callable[[], float] = time.time  # a seam for tests

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=STREAM, target="activity", primary_key="id", cursor_kind=CursorKind.TIMESTAMP,
                           reports_deletes=False, accepts_writes=False)]

    # -- HTTP ------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            auth = self.cfg.auth
            secret = auth.secret()
            kwargs: dict[str, Any] = {"sleep": self.context.sleep} if self.context.sleep is not None else {}
            if auth.access_token is not None:
                kwargs["headers"] = {"Authorization": f"Bearer {secret}"}
            else:
                kwargs["auth"] = httpx.BasicAuth(auth.api_id or "", secret)
            self._client = build_client(
                base_url=self.cfg.base_url, timeout=self.cfg.timeout_seconds, budget=self.context.budget,
                rate_headers=RATE_HEADERS, secrets=[secret], transport=self.context.transport, **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _redactor(self) -> Redactor:
        found = getattr(self.client, "redactor", None)
        return found if isinstance(found, Redactor) else Redactor([self.cfg.auth.secret()])

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.get(path, params=params)

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        raise_for_status(resp, self._redactor())
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            text = self._redactor().redact(resp.text[:65536])[:200]
            raise FatalError(f"Aircall answered {resp.status_code} with a body that is not JSON: {text!r}") from None
        if not isinstance(data, dict):
            raise FatalError("Aircall answered with JSON that is not an object")
        return data

    def check(self) -> str:
        self._json(self._get("/v1/ping"))
        return f"credentials accepted by {self.cfg.base_url}"

    # -- reading ---------------------------------------------------------------------------------

    def _first_since(self) -> int:
        start = self.cfg.start_date or (datetime.fromtimestamp(self.clock(), UTC).date()
                                        - timedelta(days=self.cfg.lookback_days))
        return int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream != STREAM:
            raise FatalError(f"aircall has no stream {stream!r} (it has: {STREAM})")
        c: Cursor = dict(cursor) if cursor else {"since": self._first_since(), "seen": [], "open": {}}
        now = int(self.clock())
        if c.get("open"):
            for page in self._refresh_open(c, now):
                c = page.next_cursor or c
                yield page
        stack = [(int(c["since"]), max(now, int(c["since"])))]
        extra = 0  # requests no page carries yet (a first page discarded by a split)
        while stack:
            lo, hi = stack.pop()
            data = self._json(self._get("/v1/calls", {"from": lo, "to": hi, "order": "asc",
                                                      "per_page": self.cfg.per_page, "page": 1}))
            meta = data.get("meta") or {}
            total = int(meta.get("total") or 0)
            # `>=`: whether Aircall reports totals past the cap, or stops counting at it, is not documented
            if total >= self.cfg.result_cap and hi > lo:
                # halves overlap by a second: `from`/`to` inclusiveness is not documented; `seen` dedupes
                mid = (lo + hi) // 2
                halves = [(lo, mid), (mid, hi)] if mid > lo else [(lo, lo), (hi, hi)]
                stack.extend(reversed(halves))
                extra += 1
                continue
            if total >= self.cfg.result_cap:
                log.warning("aircall: %d calls created in the second %d, more than one query can page "
                            "through (%d); reading the first %d", total, lo, self.cfg.result_cap, self.cfg.result_cap)
            while True:
                page, c = self._page(data.get("calls") or [], c, now, 1 + extra)
                extra = 0
                yield page
                link = (data.get("meta") or {}).get("next_page_link")
                if not link:
                    break
                data = self._json(self._get(str(link)))
        if extra:
            yield Page(next_cursor=c, requests=extra)

    def _page(self, calls: list[Any], c: Cursor, now: int, requests: int) -> tuple[Page, Cursor]:
        since, seen = int(c["since"]), set(c.get("seen") or [])
        opened: dict[str, int] = dict(c.get("open") or {})
        page = Page(requests=requests)
        for call in calls:
            rec = self._record(call)
            if isinstance(rec, RejectedRecord):
                page.rejected.append(rec)
                continue
            created = unix(call.get("started_at"), "started_at") or 0
            if created < since or (created == since and rec.external_id in seen):
                continue  # read before (the windows overlap at their edges)
            if created > since:
                since, seen = created, set()
            seen.add(rec.external_id)
            self._track(opened, rec.external_id, call, created, now)
            page.records.append(rec)
        c = {"since": since, "seen": sorted(seen), "open": opened}
        page.next_cursor = c
        return page, c

    def _track(self, opened: dict[str, int], cid: str, call: dict[str, Any], created: int, now: int) -> None:
        ended = unix(call.get("ended_at"), "ended_at")
        if call.get("status") != "done" or ended is None or now - ended < self.cfg.settle_seconds:
            opened[cid] = created
        else:
            opened.pop(cid, None)

    def _refresh_open(self, c: Cursor, now: int) -> Iterator[Page]:
        """Fetch the calls still changing one by one (a page per `per_page` of them)."""
        opened: dict[str, int] = dict(c["open"])
        ids = sorted(opened, key=lambda i: (opened[i], i))
        for start in range(0, len(ids), self.cfg.per_page):
            page = Page(requests=0)
            for cid in ids[start:start + self.cfg.per_page]:
                resp = self._get(f"/v1/calls/{cid}")
                page.requests += 1
                if resp.status_code == 404:
                    opened.pop(cid, None)  # deleted in Aircall: nothing more will come
                    continue
                call = self._json(resp).get("call")
                rec = self._record(call)
                if isinstance(rec, RejectedRecord):
                    page.rejected.append(rec)
                    opened.pop(cid, None)
                    continue
                assert isinstance(call, dict)
                self._track(opened, cid, call, opened[cid], now)
                page.records.append(rec)
            c = {**c, "open": dict(opened)}
            page.next_cursor = c
            yield page

    def _record(self, call: Any, updated_at: int | None = None) -> RawRecord | RejectedRecord:
        if not isinstance(call, dict):
            return RejectedRecord(None, call, "an Aircall call must be a JSON object")
        try:
            event = call_activity(call, updated_at)
        except ValueError as err:
            ext = str(call["id"]) if call.get("id") is not None else None
            return RejectedRecord(ext, call, f"unusable call: {err}")
        return RawRecord(external_id=event.external_id, updated_at=event.updated_at, data=call, activity=event)

    # -- webhooks --------------------------------------------------------------------------------

    def webhook_pages(self, event: dict[str, Any]) -> list[tuple[str, Page]]:
        """A stored `call.*` webhook becomes a version of the call's activity, dated by the
        event's `timestamp`; events on other resources (user, contact, number) store nothing."""
        if not isinstance(event, dict):
            raise SkippableRecord("an Aircall webhook must be a JSON object", payload=event)
        if event.get("resource") != "call" or not str(event.get("event") or "").startswith("call."):
            return []
        data = event.get("data")
        try:
            stamp = unix(event.get("timestamp"), "timestamp")
        except ValueError as err:
            raise SkippableRecord(f"unusable Aircall webhook: {err}", payload=event) from None
        rec = self._record(data, stamp)
        if isinstance(rec, RejectedRecord):
            raise SkippableRecord(f"{event.get('event')}: {rec.reason}", external_id=rec.external_id, payload=event)
        return [(STREAM, Page(records=[rec], requests=0))]
