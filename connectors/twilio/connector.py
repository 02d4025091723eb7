"""Twilio Voice connector: the Calls resource, read as call activities.

Twilio's only time filter is `StartTime>=` by **day** (`YYYY-MM-DD`, UTC) and there is no
updated-since filter, so each run is a *scan*: every call started on or after the cursor's
day, paged with `PageSize` (up to 1,000) and `next_page_uri`. What a scan already yielded
is remembered by sid with its `date_updated` (`seen`), so a re-read call is yielded again
only when it changed (a call that ended). The next scan starts on the day of the newest
start time less `overlap_seconds` (a call started just before midnight and listed late is
not lost), or earlier while a call seen in progress has not ended.

Cursor (opaque to the engine)::

    {"gen": <scans completed>, "day": "YYYY-MM-DD", "seen": {sid: [date_updated, start_epoch, open]},
     # mid-scan only:
     "next": <next_page_uri>, "acc": {...what this scan saw...}, "max_start": <epoch|None>, "pages": n}

`seen` is bounded: it keeps calls started on or after the next scan's day, plus open ones.
Deletes are not reported: Twilio has no tombstone (vendor-apis.md section 7).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.twilio.calls import TERMINAL, call_activity, callback_activity, parse_time
from hub.sdk import (
    AuthError,
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    Redactor,
    RejectedRecord,
    SkippableRecord,
    StreamSpec,
    build_client,
    raise_for_status,
)
from hub.sdk.activity import ActivityConnectorConfig

API_BASE = "https://api.twilio.com"
MAX_PAGE_SIZE = 1000  # twilio-oai: PageSize maximum; error 20007 above it
STREAM = "calls"


class TwilioAuth(BaseModel):
    """Account SID plus its auth token, or an API key (SK...) and its secret."""

    model_config = ConfigDict(extra="forbid")
    account_sid: str = Field(pattern=r"^AC[0-9A-Za-z]{32}$")
    auth_token: SecretStr | None = None
    api_key_sid: str | None = Field(None, pattern=r"^SK[0-9A-Za-z]{32}$")
    api_key_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> TwilioAuth:
        if self.api_key_sid or self.api_key_secret:
            if not (self.api_key_sid and self.api_key_secret):
                raise ValueError("an API key needs both api_key_sid and api_key_secret")
        elif self.auth_token is None:
            raise ValueError("give auth_token, or api_key_sid with api_key_secret")
        return self

    def basic(self) -> tuple[str, str]:
        if self.api_key_sid and self.api_key_secret:
            return self.api_key_sid, self.api_key_secret.get_secret_value()
        assert self.auth_token is not None
        return self.account_sid, self.auth_token.get_secret_value()


class TwilioConfig(ActivityConnectorConfig):
    base_url: str = API_BASE
    auth: TwilioAuth
    page_size: int = Field(MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    #: the first scan starts here (default: `lookback_days` before today, UTC)
    start_date: date | None = None
    lookback_days: int = Field(30, ge=0)
    #: the next scan starts on the day of (newest start time - this): a call started late in a day
    #: that Twilio lists late is still read
    overlap_seconds: int = Field(3600, ge=0)
    #: requests per second (Twilio's limits are on concurrency; this keeps a polite pace)
    requests_per_second: float | None = Field(None, gt=0)
    timeout_seconds: float = 30.0


class TwilioConnector(Connector):
    kind = "twilio"
    Config = TwilioConfig
    default_rate: ClassVar[float | None] = 10.0
    default_burst: ClassVar[int] = 10

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, TwilioConfig)
        self.cfg: TwilioConfig = config
        self._client: httpx.Client | None = None
        self.today: Any = lambda: datetime.now(UTC).date()  # a seam for tests

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=STREAM, target="activity", primary_key="sid", cursor_kind=CursorKind.TIMESTAMP,
                           reports_deletes=False, accepts_writes=False)]

    # -- HTTP ------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            user, secret = self.cfg.auth.basic()
            kwargs: dict[str, Any] = {"sleep": self.context.sleep} if self.context.sleep is not None else {}
            self._client = build_client(
                base_url=self.cfg.base_url, auth=httpx.BasicAuth(user, secret), timeout=self.cfg.timeout_seconds,
                budget=self.context.budget, secrets=[secret], transport=self.context.transport, **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _redactor(self) -> Redactor:
        found = getattr(self.client, "redactor", None)
        return found if isinstance(found, Redactor) else Redactor([self.cfg.auth.basic()[1]])

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = raise_for_status(self.client.get(path, params=params), self._redactor())
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            text = self._redactor().redact(resp.text[:65536])[:200]
            raise FatalError(f"Twilio answered {resp.status_code} with a body that is not JSON: {text!r}") from None
        if not isinstance(data, dict):
            raise FatalError("Twilio answered with JSON that is not an object")
        return data

    @property
    def calls_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.cfg.auth.account_sid}/Calls.json"

    def check(self) -> str:
        data = self._get(f"/2010-04-01/Accounts/{self.cfg.auth.account_sid}.json")
        return f"account {data.get('sid')} ({data.get('status')}) accepted the credentials"

    # -- reading ---------------------------------------------------------------------------------

    def _first_day(self) -> str:
        start = self.cfg.start_date or (self.today() - timedelta(days=self.cfg.lookback_days))
        return start.isoformat()

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream != STREAM:
            raise FatalError(f"twilio has no stream {stream!r} (it has: {STREAM})")
        c: Cursor = dict(cursor) if cursor else {"gen": 0, "day": self._first_day(), "seen": {}}
        prev: dict[str, list[Any]] = dict(c.get("seen") or {})
        acc: dict[str, list[Any]] = dict(c.get("acc") or {})
        max_start: int | None = c.get("max_start")
        pages = int(c.get("pages") or 0)
        next_uri: str | None = c.get("next")
        params: dict[str, Any] | None = None
        if next_uri is None:
            # `StartTime>` on the wire is `StartTime>=`: calls started on or after that day (UTC)
            next_uri, params = self.calls_path, {"StartTime>": c["day"], "PageSize": self.cfg.page_size}
        resumed = params is None
        while True:
            try:
                data = self._get(next_uri, params)
            except FatalError as err:
                if not resumed or isinstance(err, AuthError):
                    raise
                # a page token kept across runs may no longer be valid [U]: scan the days again. Calls
                # this scan already yielded and no longer remembers (`acc` keeps the newest day only)
                # are yielded again, unchanged: the hub's (source, external id) idempotency absorbs them
                self.context.log.warning("twilio: the stored next page was refused (%s); scanning %s again",
                                         err, c["day"])
                next_uri, params = self.calls_path, {"StartTime>": c["day"], "PageSize": self.cfg.page_size}
                resumed = False
                continue
            resumed = False
            page = Page()
            for call in data.get("calls") or []:
                rec = self._record(call)
                if isinstance(rec, RejectedRecord):
                    page.rejected.append(rec)
                    continue
                start = _epoch(call.get("start_time")) or _epoch(call.get("date_created"))
                entry = [call.get("date_updated"), start, call.get("status") not in TERMINAL]
                sid = rec.external_id
                if start is not None and (max_start is None or start > max_start):
                    max_start = start
                known = acc.get(sid) or prev.get(sid)
                acc[sid] = entry
                if known is not None and known[0] == entry[0]:
                    continue  # read by an earlier scan (or page) and unchanged since
                page.records.append(rec)
            pages += 1
            next_uri = data.get("next_page_uri")
            params = None
            if next_uri:
                acc = self._trim(acc, max_start)
                # copies: the scan goes on filling `acc` after this page is handed over
                page.next_cursor = {"gen": c["gen"], "day": c["day"], "seen": prev, "acc": dict(acc),
                                    "max_start": max_start, "next": next_uri, "pages": pages}
                yield page
                continue
            page.next_cursor = self._end_of_scan(c, prev, acc, max_start)
            yield page
            return

    def _record(self, call: Any) -> RawRecord | RejectedRecord:
        if not isinstance(call, dict):
            return RejectedRecord(None, call, "a Twilio call must be a JSON object")
        try:
            event = call_activity(call, self.cfg.base_url)
        except ValueError as err:
            return RejectedRecord(str(call.get("sid")) if call.get("sid") else None, call, f"unusable call: {err}")
        return RawRecord(external_id=event.external_id, updated_at=event.updated_at, data=call, activity=event)

    def _next_day(self, c: Cursor, max_start: int | None, acc: dict[str, list[Any]]) -> str:
        day = date.fromisoformat(c["day"])
        if max_start is not None:
            newest = datetime.fromtimestamp(max_start - self.cfg.overlap_seconds, UTC).date()
            day = max(day, newest)  # the scan's own day is a floor: the cursor never moves back
        opened = [e[1] for e in acc.values() if e[2] and e[1] is not None]
        if opened:
            # a call seen in progress is read again until it ends, so its day stays in the scan
            day = max(date.fromisoformat(c["day"]), min(day, datetime.fromtimestamp(min(opened), UTC).date()))
        return day.isoformat()

    def _trim(self, acc: dict[str, list[Any]], max_start: int | None) -> dict[str, list[Any]]:
        """Only calls the next scan can list again need remembering."""
        if max_start is None:
            return acc
        floor = datetime.fromtimestamp(max_start - self.cfg.overlap_seconds, UTC).date()
        cut = int(datetime(floor.year, floor.month, floor.day, tzinfo=UTC).timestamp())
        return {s: e for s, e in acc.items() if e[2] or e[1] is None or e[1] >= cut}

    def _end_of_scan(self, c: Cursor, prev: dict[str, list[Any]], acc: dict[str, list[Any]],
                     max_start: int | None) -> Cursor:
        day = self._next_day(c, max_start, acc)
        cut = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
        # calls of the previous scan not listed this time (none should be) are kept while still in range
        merged = {**{s: e for s, e in prev.items() if e[1] is not None and e[1] >= cut}, **acc}
        seen = {s: e for s, e in merged.items() if e[2] or e[1] is None or e[1] >= cut}
        return {"gen": int(c["gen"]) + 1, "day": day, "seen": seen}

    # -- webhooks --------------------------------------------------------------------------------

    def webhook_pages(self, event: dict[str, Any]) -> list[tuple[str, Page]]:
        """A stored status callback becomes a version of the call's activity.

        Recording-status callbacks (no `CallStatus`) carry no call facts: the polled call links
        its recordings instead, so they store nothing.
        """
        if not isinstance(event, dict):
            raise SkippableRecord("a Twilio callback must be an object of form parameters", payload=event)
        if "CallStatus" not in event:
            return []
        account = event.get("AccountSid")
        if account and account != self.cfg.auth.account_sid:
            raise SkippableRecord(f"callback for account {account}, not {self.cfg.auth.account_sid}",
                                  external_id=str(event.get("CallSid") or ""), payload=event)
        try:
            act = callback_activity(event)
        except ValueError as err:
            raise SkippableRecord(f"unusable status callback: {err}", external_id=str(event.get("CallSid") or ""),
                                  payload=event) from None
        rec = RawRecord(external_id=act.external_id, updated_at=act.updated_at, data=event, activity=act)
        return [(STREAM, Page(records=[rec], requests=0))]


def _epoch(value: Any) -> int | None:
    try:
        when = parse_time(value)
    except ValueError:
        return None
    return int(when.timestamp()) if when is not None else None
