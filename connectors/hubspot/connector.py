"""HubSpot CRM v3 connector: contacts, companies, deals and engagements; owners, pipelines; writes.

Streams: `contacts`, `companies`, `deals` (records, writable: `writes.py`) and the engagements
`calls`, `emails`, `meetings`, `notes`, `tasks` (activities with their associations:
`engagements.py`), all read the same way. Owners and deal pipelines are configuration, read by
`owners()` and `pipelines()` (`portal.py`). Auth is built in `auth.py`; rate limits in `limits.py`.

Full load: the list endpoints, `after` paging, 100 a page. Incremental: the search
endpoint on the last-modified property, keyset by time (never by `after`, so the
10,000-result cap never binds and a record changed mid-scan is not skipped), with an
id keyset when more than a page of records share one timestamp (the month-end trap).
Deletes: the archived list, filtered by `archivedAt`.

Cursor (opaque to the engine), one of::

    {"phase": "full", "after": <token|None>, "since": <ms>}
    {"phase": "incremental", "ts": <ms>, "seen": [ids at ts], "all_at_ts": bool,
     "id_after": <id|None>, "collapsed": bool, "archived_since": <ms>, "archived_after": <token|None>,
     "archived_max": <ms|None>, "archived_floor": <ms|None>}

The archived list has no time filter and no documented order, so a record archived while a
multi-page pass runs, behind the pass's position, is missed by that pass. It was archived after
everything the previous pass saw (`archived_floor`), so the next pass starts from there; a delete
may then be reported twice, which the writer absorbs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.hubspot import engagements, portal
from connectors.hubspot.auth import build_auth
from connectors.hubspot.limits import RATE_HEADERS, DailyLimit
from connectors.hubspot.writes import WRITE_FIELDS, BatchWriter
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
    WriteResult,
    build_client,
    raise_for_status,
)
from hub.sdk.activity import ActivityConnectorConfig
from hub.sdk.http import IDEMPOTENT
from hub.sdk.oauth import OAuth2Settings

__all__ = ["RATE_HEADERS", "HubSpotConfig", "HubSpotConnector"]

LIST_LIMIT = 100  # the official SDKs' MAX_PAGE_SIZE
SEARCH_LIMIT = 200

#: stream -> (object type, canonical target, last-modified property, default properties, associations)
OBJECTS: dict[str, tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = {
    # contacts: `hs_lastmodifieddate` misbehaves in search on contacts; `lastmodifieddate` does not
    "contacts": ("contacts", "contact", "lastmodifieddate",
                 ("email", "firstname", "lastname", "phone", "jobtitle", "lifecyclestage", "associatedcompanyid",
                  "hubspot_owner_id", "createdate", "lastmodifieddate"), ()),
    "companies": ("companies", "account", "hs_lastmodifieddate",
                  ("name", "domain", "industry", "hubspot_owner_id", "createdate", "hs_lastmodifieddate"), ()),
    "deals": ("deals", "opportunity", "hs_lastmodifieddate",
              ("dealname", "amount", "dealstage", "pipeline", "closedate", "deal_currency_code", "hubspot_owner_id",
               "createdate", "hs_lastmodifieddate"), ("companies",)),
    # engagements: activities, with the records they are associated with
    **{s: (s, "activity", "hs_lastmodifieddate", (*props, "hs_lastmodifieddate"), engagements.ASSOCIATED)
       for s, (_kind, props) in engagements.ENGAGEMENTS.items()},
}


class HubSpotAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr = Field(description="private-app access token")


class HubSpotConfig(ActivityConnectorConfig):
    """The `connectors.<name>` block of a HubSpot instance. From `ActivityConnectorConfig`:
    `body_excerpt_chars` (engagement bodies: 0 keeps metadata only) and `internal` (the team's
    addresses and `@domains`, e.g. the owners' mail domain, which never become contacts)."""

    base_url: str = "https://api.hubapi.com"
    #: a private-app token (`auth: {token: ...}`) or OAuth (`oauth: {client_id, token_url, ...}`)
    auth: HubSpotAuth | None = None
    oauth: OAuth2Settings | None = None
    #: requests per second for this portal, shared by all streams (190 per 10 s for private apps)
    requests_per_second: float | None = Field(None, gt=0)
    #: extra properties to read per stream, beyond the defaults and the mapping's
    properties: dict[str, list[str]] = Field(default_factory=dict)
    #: how far behind the newest change an incremental start is placed (search indexing lag)
    search_lag_ms: int = Field(60_000, ge=0)
    page_size: int = Field(LIST_LIMIT, ge=1, le=LIST_LIMIT)
    search_page_size: int = Field(SEARCH_LIMIT, ge=1, le=SEARCH_LIMIT)
    timeout_seconds: float = 30.0
    #: share of the account's daily request limit left to its other apps and people
    daily_reserve: float = Field(0.05, ge=0, lt=1)
    #: the account's time zone, where its daily limit resets at midnight
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> HubSpotConfig:
        if (self.auth is None) == (self.oauth is None):
            raise ValueError("needs `auth: {token: ...}` (a private app) or `oauth: {...}` (an OAuth app), "
                             "not both and not neither")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin") from None
        return v


def to_ms(value: Any) -> int:
    """HubSpot dates arrive as ISO strings in properties, or epoch-ms strings in filters."""
    if value is None or value == "":
        return 0
    s = str(value)
    if s.isdigit():
        return int(s)
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


class HubSpotConnector(Connector):
    kind = "hubspot"
    Config = HubSpotConfig
    default_rate: ClassVar[float | None] = 19.0
    default_burst: ClassVar[int] = 19

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, HubSpotConfig)
        self.cfg: HubSpotConfig = config
        self._client: httpx.Client | None = None
        self.daily = DailyLimit(config.daily_reserve, config.timezone)

    # -- declaration -----------------------------------------------------------------------------

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=s, target=o[1], primary_key="id", cursor_kind=CursorKind.TIMESTAMP,
                           reports_deletes=True, accepts_writes=s in WRITE_FIELDS) for s, o in OBJECTS.items()]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            auth, secrets = build_auth(self.cfg, self.context)
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            self._client = build_client(
                base_url=self.cfg.base_url, auth=auth,
                timeout=self.cfg.timeout_seconds, budget=self.context.budget, rate_headers=RATE_HEADERS,
                secrets=secrets, transport=self.context.transport, **kwargs,
            )
            self._client.event_hooks = {"request": [self.daily.check], "response": [self.daily]}
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def properties(self, stream: str) -> list[str]:
        _obj, _t, ts_prop, defaults, _a = OBJECTS[stream]
        hinted = [p.split(".", 1)[1].split(".")[0] for p in self.context.field_hints.get(stream, ())
                  if p.startswith("properties.")]
        bodies = engagements.body_properties(stream) if self.cfg.body_excerpt_chars else ()
        return sorted({*defaults, ts_prop, *hinted, *bodies, *self.cfg.properties.get(stream, [])})

    # -- HTTP ------------------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.get(path, params=params)
        return self._json(raise_for_status(resp, self._redactor()))

    def _search(self, obj: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._post_read(f"/crm/v3/objects/{obj}/search", body)

    def _post_read(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A POST that only reads (search, associations batch read): safe to retry on 5xx."""
        resp = self.client.post(path, content=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                extensions={IDEMPOTENT: True})
        return self._json(raise_for_status(resp, self._redactor()))

    def _post_write(self, path: str, body: dict[str, Any], idempotent: bool) -> httpx.Response:
        return self.client.post(path, content=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                extensions={IDEMPOTENT: idempotent})

    def _redactor(self) -> Redactor:
        found = getattr(self.client, "redactor", None)
        if isinstance(found, Redactor):
            return found
        return Redactor(build_auth(self.cfg, self.context)[1])

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        # A proxy or error page may echo the request's credentials: redact before quoting (then cut,
        # so a secret cut in half cannot slip through).
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            text = self._redactor().redact(resp.text[:65536])[:200]
            raise FatalError(f"HubSpot answered {resp.status_code} with a body that is not JSON: {text!r}") from None
        if not isinstance(data, dict):
            text = self._redactor().redact(str(data)[:65536])[:200]
            raise FatalError(f"HubSpot answered with JSON that is not an object: {text}")
        return data

    def check(self) -> str:
        """The token works (one call); then the deal pipelines and their stages, when the token may read them."""
        self._get("/crm/v3/objects/contacts", {"limit": 1})
        out = f"token accepted by {self.cfg.base_url}"
        try:
            found = self.pipelines("deals")
        except FatalError as exc:  # a token without the pipelines scope still syncs records
            return f"{out}; deal pipelines not readable: {str(exc)[:120]}"
        described = "; ".join(f"{p.label} [{p.id}]: " + ", ".join(f"{s.label} [{s.id}]" for s in p.stages)
                              for p in found)
        return f"{out}; deal pipelines: {described or 'none'}"

    # -- configuration: owners and pipelines -----------------------------------------------------

    def owners(self, *, archived: bool = False) -> Iterator[portal.Owner]:
        """Every owner of the portal, to map `hubspot_owner_id` to a person (email, name, user id).

        Deactivated users are archived owners (`archived=True`); their ids stay on old records.
        """
        yield from portal.iter_owners(self._get, archived=archived)

    def pipelines(self, object_type: str = "deals") -> list[portal.Pipeline]:
        """The object type's pipelines with their stages (ids and labels, as strings)."""
        return portal.parse_pipelines(self._get(f"/crm/v3/pipelines/{object_type}", {}))

    # -- writing ---------------------------------------------------------------------------------

    def write(self, stream: str, changes: Sequence[dict[str, Any]]) -> list[WriteResult]:
        """Batch create/update/upsert, 100 per call; per-record outcomes (see `writes.py`)."""
        if stream not in WRITE_FIELDS:
            raise FatalError(f"hubspot does not write {stream!r} (it writes: {', '.join(WRITE_FIELDS)})")
        writer = BatchWriter(stream, OBJECTS[stream][0], self._post_write, self._redactor(), f"crmhub-{self.name}")
        return writer.write(changes)

    # -- reading ---------------------------------------------------------------------------------

    def _record(self, stream: str, raw: dict[str, Any]) -> RawRecord | RejectedRecord:
        ext = raw.get("id")
        if not ext:
            return RejectedRecord(None, raw, "HubSpot record without an id")
        if stream in engagements.ENGAGEMENTS:
            try:
                activity = engagements.to_activity(stream, raw, self.cfg.body_excerpt_chars)
            except (ValueError, TypeError, KeyError) as exc:
                return RejectedRecord(str(ext), raw, f"HubSpot {stream} {ext}: {exc}")
            return RawRecord(external_id=str(ext), updated_at=raw.get("updatedAt"), data=raw, activity=activity)
        return RawRecord(external_id=str(ext), updated_at=raw.get("updatedAt"), data=raw)

    def _associate(self, stream: str, results: list[dict[str, Any]]) -> int:
        """Search returns no associations: fetch them for an engagement page. Requests made."""
        if stream not in engagements.ENGAGEMENTS:
            return 0
        return engagements.attach_associations(self._post_read, OBJECTS[stream][0], results)

    def _page(self, stream: str, results: list[dict[str, Any]], cursor: Cursor, requests: int = 1,
              deleted: list[str] | None = None) -> Page:
        page = Page(next_cursor=cursor, requests=requests, deleted=deleted or [])
        for raw in results:
            rec = self._record(stream, raw)
            (page.records if isinstance(rec, RawRecord) else page.rejected).append(rec)  # type: ignore[arg-type]
        return page

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream not in OBJECTS:
            raise FatalError(f"hubspot has no stream {stream!r}")
        if not cursor:
            since, seen = self._newest_change(stream)
            cursor = {"phase": "full", "after": None, "since": since, "seen": seen, "probe_requests": 1}
        if cursor.get("phase") == "full":
            last: Cursor = {}
            for page in self._read_full(stream, cursor):
                last = page.next_cursor or {}
                yield page
            cursor = last
        yield from self._read_incremental(stream, cursor)

    @staticmethod
    def _first_incremental(full: Cursor) -> Cursor:
        # archived_since 0: after a (re)load, every archived record is reported once
        return {"phase": "incremental", "ts": int(full["since"]), "seen": list(full.get("seen") or []),
                "all_at_ts": False, "id_after": None, "collapsed": False,
                "archived_since": 0, "archived_after": None, "archived_max": None, "archived_floor": None}

    def _newest_change(self, stream: str) -> tuple[int, list[str]]:
        """Where incremental reading starts after a full load: the vendor's own newest change
        time before the load (not our clock), less the search indexing lag.

        With no lag, the probed record itself is marked seen: the full load reads it.
        """
        obj, _t, ts_prop, _d, _a = OBJECTS[stream]
        data = self._search(obj, {"sorts": [{"propertyName": ts_prop, "direction": "DESCENDING"}],
                                  "properties": [ts_prop], "limit": 1})
        results = data.get("results") or []
        if not results:
            return 0, []
        newest = to_ms((results[0].get("properties") or {}).get(ts_prop))
        if self.cfg.search_lag_ms:
            return max(0, newest - self.cfg.search_lag_ms), []
        return newest, [str(results[0].get("id"))]

    def _read_full(self, stream: str, cursor: Cursor) -> Iterator[Page]:
        obj, _t, _ts, _d, assoc = OBJECTS[stream]
        params: dict[str, Any] = {"limit": self.cfg.page_size, "properties": ",".join(self.properties(stream)),
                                  "archived": "false"}
        if assoc:
            params["associations"] = ",".join(assoc)
        after = cursor.get("after")
        extra = int(cursor.get("probe_requests") or 0)  # the probe is counted with the first page
        cursor = {k: v for k, v in cursor.items() if k != "probe_requests"}
        while True:
            data = self._get(f"/crm/v3/objects/{obj}", {**params, **({"after": after} if after else {})})
            after = (((data.get("paging") or {}).get("next")) or {}).get("after")
            requests, extra = 1 + extra, 0
            if not after:
                # the last full page's checkpoint is already the incremental start
                yield self._page(stream, data.get("results", []), self._first_incremental(cursor), requests)
                return
            yield self._page(stream, data.get("results", []), {**cursor, "after": after}, requests)

    def _read_incremental(self, stream: str, cursor: Cursor) -> Iterator[Page]:
        obj, _t, ts_prop, _d, _a = OBJECTS[stream]
        props = self.properties(stream)
        limit = self.cfg.search_page_size
        c = dict(cursor)
        unreported = 0
        if self.cfg.search_lag_ms and not c.get("collapsed") and c.get("id_after") is None:
            yield from self._sweep_lag_window(stream, c)
        while True:
            ts = int(c["ts"])
            if c.get("id_after") is not None or c.get("collapsed"):
                # more than a page of records share `ts`: walk them by id
                filters = [{"propertyName": ts_prop, "operator": "EQ", "value": str(ts)},
                           {"propertyName": "hs_object_id", "operator": "GT", "value": str(c.get("id_after") or 0)}]
                body = {"filterGroups": [{"filters": filters}],
                        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                        "properties": props, "limit": limit}
                results = self._search(obj, body).get("results", [])
                seen = set(c.get("seen") or [])
                fresh = [r for r in results if str(r.get("id")) not in seen]
                if len(results) < limit:
                    c = {**c, "id_after": None, "collapsed": False, "all_at_ts": True, "seen": []}
                else:
                    c = {**c, "id_after": max(int(r["id"]) for r in results), "collapsed": True}
                yield self._page(stream, fresh, dict(c), 1 + self._associate(stream, fresh))
                continue
            op = "GT" if c.get("all_at_ts") else "GTE"
            body = {"filterGroups": [{"filters": [{"propertyName": ts_prop, "operator": op, "value": str(ts)}]}],
                    "sorts": [{"propertyName": ts_prop, "direction": "ASCENDING"}],
                    "properties": props, "limit": limit}
            results = self._search(obj, body).get("results", [])
            if not results:
                unreported += 1  # no page carries this request: the next one does
                break
            stamps = [to_ms((r.get("properties") or {}).get(ts_prop)) for r in results]
            seen = set(c.get("seen") or []) if not c.get("all_at_ts") else set()
            fresh = [r for r, t in zip(results, stamps, strict=True) if not (t == ts and str(r.get("id")) in seen)]
            top = max(stamps)
            at_top = [str(r.get("id")) for r, t in zip(results, stamps, strict=True) if t == top]
            full_page = len(results) >= limit
            if full_page and min(stamps) == top:
                # the whole page shares one timestamp: a time keyset cannot move past it
                c = {**c, "ts": top, "seen": sorted(set(at_top) | (seen if top == ts else set())),
                     "all_at_ts": False, "collapsed": True, "id_after": None}
            else:
                carried = seen if top == ts else set()
                c = {**c, "ts": top, "seen": sorted(carried | set(at_top)), "all_at_ts": False}
            yield self._page(stream, fresh, dict(c), 1 + self._associate(stream, fresh))
            if not full_page:
                break
        yield from self._read_archived(stream, c, 1 + unreported)

    def _sweep_lag_window(self, stream: str, c: Cursor) -> Iterator[Page]:
        """Re-read the `search_lag_ms` before the cursor: a record changed there may have become
        searchable only after the last run passed it (search indexing lags writes).

        An id keyset inside the window, so it ends whatever the timestamps; re-reads are
        idempotent upserts. The cursor does not move, so a resume sweeps again.
        """
        obj, _t, ts_prop, _d, _a = OBJECTS[stream]
        ts = int(c["ts"])
        seen = set(c.get("seen") or []) if not c.get("all_at_ts") else set()
        after_id = 0
        while True:
            filters = [{"propertyName": ts_prop, "operator": "BETWEEN", "value": str(max(0, ts - self.cfg.search_lag_ms)),
                        "highValue": str(ts)},
                       {"propertyName": "hs_object_id", "operator": "GT", "value": str(after_id)}]
            body = {"filterGroups": [{"filters": filters}],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": self.properties(stream), "limit": self.cfg.search_page_size}
            results = self._search(obj, body).get("results", [])
            fresh = [r for r in results if not (str(r.get("id")) in seen
                                                and to_ms((r.get("properties") or {}).get(ts_prop)) == ts)]
            yield self._page(stream, fresh, dict(c), 1 + self._associate(stream, fresh))
            if len(results) < self.cfg.search_page_size:
                return
            after_id = max(int(r["id"]) for r in results)

    def _read_archived(self, stream: str, c: Cursor, requests: int = 1) -> Iterator[Page]:
        """Deletes: HubSpot lists archived records but cannot filter them by time, so filter here."""
        obj = OBJECTS[stream][0]
        since = int(c.get("archived_since") or 0)
        newest = int(c.get("archived_max") or since)
        after = c.get("archived_after")
        one_page = not after  # a pass resumed mid-way already took more than one page
        while True:
            params: dict[str, Any] = {"limit": self.cfg.page_size, "archived": "true", "properties": "hs_object_id"}
            if after:
                params["after"] = after
            data = self._get(f"/crm/v3/objects/{obj}", params)
            gone = []
            for r in data.get("results", []):
                at = to_ms(r.get("archivedAt"))
                if at >= since:
                    gone.append(str(r["id"]))
                    newest = max(newest, at)
            after = (((data.get("paging") or {}).get("next")) or {}).get("after")
            if after:
                one_page = False
                yield Page(deleted=gone, next_cursor={**c, "archived_after": after, "archived_max": newest},
                           requests=requests)
            else:
                # One page is one snapshot. Over several pages, a record archived behind the pass was
                # missed, but it was archived after all the previous pass saw: start the next from there.
                floor = c.get("archived_floor")
                start = newest if one_page else max(since, int(floor) if floor is not None else since)
                yield Page(deleted=gone, next_cursor={**c, "archived_after": None, "archived_max": None,
                                                      "archived_since": start, "archived_floor": newest},
                           requests=requests)
                return
            requests = 1
