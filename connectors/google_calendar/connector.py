"""Google Calendar connector: the events of several calendars as meeting activities (stream `events`).

Per calendar: the full sync lists `events.list?singleEvents=true` inside a bounded window
(`timeMin` = now - lookback, `timeMax` = now + lookahead), so recurring meetings arrive as their
instances, exceptions (a moved or cancelled occurrence) included; its last page's `nextSyncToken`
is stored. Later syncs pass `syncToken` (with the same `singleEvents`, and none of the parameters
Google forbids with it), which also returns cancelled events. A token Google no longer accepts
answers 410 Gone: `CursorExpired`, and the engine records a full resync.

Cancelled events: one that still carries its times and people becomes the activity with status
`cancelled`. A bare tombstone (only `id`, which is all the docs guarantee: Google reports a
deleted event so too) is reported in `Page.deleted` and as a status-only event (no `occurred_at`,
status `cancelled`), so the hub records a new version of the stored activity with that status and
its time and people, instead of overwriting it with an empty event. Instances of a series outside
the window are left out on incremental syncs as on the full one.

Cursor (opaque to the engine)::

    {"calendars": {"<address>": {"phase": "full", "time_min", "time_max", "page_token", "pages"}
                              | {"phase": "sync", "sync_token", "page_token", "pages"}}}

External ids are `<calendar>:<event id>` (an instance's id names its series and original start).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.gmail.google_api import account_auth, account_secrets, check, json_object
from connectors.google_calendar.events import event_time, is_bare_tombstone, to_activity
from hub.sdk import (
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
    StreamSpec,
    build_client,
)
from hub.sdk.activity import ActivityConnectorConfig, ActivityEvent
from hub.sdk.oauth import OAuth2Settings

__all__ = ["CalendarAccount", "GoogleCalendarConfig", "GoogleCalendarConnector"]

PAGE_MAX = 2500  # events.list maxResults cap (discovery document)
STREAM = "events"


class CalendarAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(description="the calendar's id: its owner's address")
    #: a fixed OAuth access token (calendar.readonly); without one, the instance's `oauth` client gets them
    access_token: SecretStr | None = None


class GoogleCalendarConfig(ActivityConnectorConfig):
    base_url: str = "https://www.googleapis.com"
    calendars: list[CalendarAccount] = Field(min_length=1)
    #: the OAuth client: `authorization_code` (one login per calendar, `--subject <address>`) or
    #: `jwt_bearer` (a Workspace service account with domain-wide delegation; `sub` = each owner)
    oauth: OAuth2Settings | None = None
    #: the window recurring meetings are expanded in, around the time of the full sync
    lookback_days: int = Field(90, ge=1)
    lookahead_days: int = Field(180, ge=1)
    page_size: int = Field(PAGE_MAX, ge=1, le=PAGE_MAX)
    requests_per_second: float | None = Field(None, gt=0)
    timeout_seconds: float = 30.0

    @field_validator("calendars")
    @classmethod
    def _distinct(cls, value: list[CalendarAccount]) -> list[CalendarAccount]:
        seen: set[str] = set()
        for c in value:
            if c.address.lower() in seen:
                raise ValueError(f"calendar {c.address!r} is listed twice")
            seen.add(c.address.lower())
        return value

    @model_validator(mode="after")
    def _owners_are_internal(self) -> GoogleCalendarConfig:
        if self.oauth is None:
            bare = [c.address for c in self.calendars if c.access_token is None]
            if bare:
                raise ValueError(f"calendars {', '.join(bare)} have no access_token. Fix: give each an "
                                 "access_token, or configure `oauth` (authorization_code or a service account)")
        # the calendars' owners are the team's own: the hub must never make contacts of them
        known = {i.lower() for i in self.internal}
        self.internal = [*self.internal, *(c.address for c in self.calendars if c.address.lower() not in known)]
        return self


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GoogleCalendarConnector(Connector):
    kind = "google_calendar"
    Config = GoogleCalendarConfig
    # 600 requests/min per user per project (May-2026 quotas)
    default_rate: ClassVar[float | None] = 10.0
    default_burst: ClassVar[int] = 10

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, GoogleCalendarConfig)
        self.cfg: GoogleCalendarConfig = config
        self._client: httpx.Client | None = None
        self._auths: dict[str, httpx.Auth] | None = None
        self._secrets = account_secrets([c.access_token for c in config.calendars], config.oauth)
        self._redactor = Redactor(self._secrets)

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=STREAM, target="activity", primary_key="id", cursor_kind=CursorKind.SYNC_TOKEN,
                           reports_deletes=True)]

    def _auth(self, address: str) -> httpx.Auth:
        if self._auths is None:
            self._auths = {c.address.lower(): account_auth(c.address, c.access_token, self.cfg.oauth,
                                                             self.context) for c in self.cfg.calendars}
        return self._auths[address.lower()]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            self._client = build_client(
                base_url=self.cfg.base_url, timeout=self.cfg.timeout_seconds, budget=self.context.budget,
                secrets=self._secrets,
                transport=self.context.transport, **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for auth in (self._auths or {}).values():
            closer = getattr(auth, "close", None)  # an OAuth auth holds a client for the token endpoint
            if closer is not None:
                closer()
        self._auths = None

    def _list(self, calendar: str, params: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.get(f"/calendar/v3/calendars/{quote(calendar, safe='@')}/events", params=params,
                               auth=self._auth(calendar))
        check(resp, self._redactor, expired_status=410, what=f"sync token of {calendar}")
        return json_object(resp, self._redactor, "Google Calendar")

    def check(self) -> str:
        for c in self.cfg.calendars:
            self._list(c.address, {"maxResults": 1, "singleEvents": "true"})
        return f"tokens accepted for {', '.join(c.address for c in self.cfg.calendars)}"

    # -- reading ---------------------------------------------------------------------------------
    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream != STREAM:
            raise FatalError(f"google_calendar has no stream {stream!r} (it has: {STREAM})")
        old = (cursor or {}).get("calendars") or {}
        state: dict[str, Any] = {c.address.lower(): old.get(c.address.lower()) for c in self.cfg.calendars}
        for cal in self.cfg.calendars:
            key = cal.address.lower()
            if state[key] is None:
                now = datetime.now(UTC)
                state[key] = {"phase": "full", "time_min": _iso(now - timedelta(days=self.cfg.lookback_days)),
                              "time_max": _iso(now + timedelta(days=self.cfg.lookahead_days)),
                              "page_token": None, "pages": 0}
            yield from self._read(cal.address, state)

    def _read(self, calendar: str, state: dict[str, Any]) -> Iterator[Page]:
        key = calendar.lower()
        while True:
            s = state[key]
            params: dict[str, Any] = {"singleEvents": "true", "maxResults": self.cfg.page_size}
            if s["phase"] == "full":
                params.update(timeMin=s["time_min"], timeMax=s["time_max"])
            else:
                params["syncToken"] = s["sync_token"]
            if s.get("page_token"):
                params["pageToken"] = s["page_token"]
            data = self._list(calendar, params)
            token, sync_token = data.get("nextPageToken"), data.get("nextSyncToken")
            if token:
                state[key] = {**s, "page_token": token, "pages": int(s.get("pages") or 0) + 1}
            elif sync_token:
                state[key] = {"phase": "sync", "sync_token": sync_token, "page_token": None, "pages": 0}
            else:
                raise FatalError(f"Google Calendar's last page for {calendar} carried no nextSyncToken")
            yield self._page(calendar, data.get("items") or [], state, incremental=s["phase"] == "sync")
            if not token:
                return

    def _in_window(self, ev: dict[str, Any]) -> bool:
        """Instances of a series are kept inside the expansion window (a series may be endless)."""
        if not ev.get("recurringEventId"):
            return True
        try:
            found = event_time(ev.get("start")) or event_time(ev.get("originalStartTime"))
        except ValueError:
            return True  # let the record fail where it can be queued
        if found is None:
            return True
        now = datetime.now(UTC)
        return now - timedelta(days=self.cfg.lookback_days) <= found[0] <= now + timedelta(days=self.cfg.lookahead_days)

    def _page(self, calendar: str, items: list[Any], state: dict[str, Any], *, incremental: bool) -> Page:
        cursor = {"calendars": {k: dict(v) for k, v in state.items() if v is not None}}
        page = Page(next_cursor=cursor, requests=1)
        cal = calendar.lower()
        for ev in items:
            if not isinstance(ev, dict) or not ev.get("id"):
                page.rejected.append(RejectedRecord(None, ev, "Calendar event without an id"))
                continue
            ext = f"{cal}:{ev['id']}"
            if incremental and not self._in_window(ev):
                continue
            if is_bare_tombstone(ev):
                # the delete signal, and what it means here: the meeting is off, as in the full form
                page.deleted.append(ext)
                page.records.append(RawRecord(external_id=ext, updated_at=ev.get("updated"), data=ev,
                                              activity=ActivityEvent(type="meeting", external_id=ext, occurred_at="",
                                                                     status="cancelled",
                                                                     updated_at=ev.get("updated"))))
                continue
            raw = ev if self.cfg.body_excerpt_chars > 0 else {k: v for k, v in ev.items() if k != "description"}
            try:
                event = to_activity(ev, calendar=calendar, external_id=ext,
                                    excerpt=self.cfg.excerpt(ev.get("description")))
            except ValueError as exc:
                page.rejected.append(RejectedRecord(ext, raw, str(exc)))
                continue
            page.records.append(RawRecord(external_id=ext, updated_at=ev.get("updated"), data=raw, activity=event))
        return page
