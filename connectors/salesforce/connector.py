"""Salesforce REST connector: Account, Contact, Lead, Opportunity, Task, Event and custom objects.

Reading is one SOQL keyset on ``(SystemModstamp, Id)``, for the first load and every run after::

    SELECT ... FROM Contact
    WHERE SystemModstamp > 2024-06-01T12:00:00Z OR (SystemModstamp = 2024-06-01T12:00:00Z AND Id > '003...')
    ORDER BY SystemModstamp, Id

followed through ``nextRecordsUrl`` (2,000 a batch). Each batch is a page whose cursor is the
keyset of its last record, so a resume never needs the query locator (they expire) and never
skips a record that shares its second with thousands of others. The literal is the cursor's
second: where Salesforce keeps sub-second stamps, the few records in that second already read
are dropped here.

Deletes, by `deletes:` in config:

- ``get_deleted`` (default): ``/sobjects/{X}/deleted/?start=&end=`` from the last
  ``latestDateCovered``, read *before* the changes (so a record deleted then restored ends live).
  When the start is older than ``earliestDateAvailable`` (about 15 days, less after a purge)
  deletes were lost: `CursorExpired`, and the engine records a full resync.
- ``query_all``: the keyset runs on ``/queryAll`` and rows with ``IsDeleted = true`` are deletes;
  a cursor older than the recycle bin's 15 days is expired the same way.

Cursor (opaque to the engine)::

    {"ts": "<SystemModstamp of the last record read>" | None, "id": "<its Id>" | None,
     "deleted_since": "<ISO time deletes are read from>"}
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.salesforce import soql
from connectors.salesforce.activities import activity_event
from connectors.salesforce.api import LocatorExpired, SalesforceApi, Session, parse_sf_datetime
from connectors.salesforce.objects import (
    ACTIVITY_OBJECTS,
    COLLECTION_MAX,
    DEFAULT_API_VERSION,
    QUERY_BATCH_MAX,
    QUERY_BATCH_MIN,
    STANDARD,
    SObject,
)
from connectors.salesforce.writes import upsert
from hub.sdk import (
    AuthError,
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorExpired,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    RejectedRecord,
    StreamSpec,
    WriteResult,
    build_client,
)
from hub.sdk.activity import ActivityConnectorConfig
from hub.sdk.oauth import OAuth2Settings, oauth_auth

__all__ = ["SalesforceConfig", "SalesforceConnector"]

_VERSION = re.compile(r"v\d{2,3}\.\d")
RECYCLE_BIN_DAYS = 15


class SalesforceAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_token: SecretStr = Field(description="OAuth access token (the token response's access_token)")
    instance_url: str = Field(description="the org's host from the token response, https://MyDomain.my.salesforce.com")

    @field_validator("instance_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"instance_url must be an http(s) URL such as https://acme.my.salesforce.com, not {v!r}")
        return v.rstrip("/")


class SalesforceConfig(ActivityConnectorConfig):
    #: a token as issued (`auth: {access_token, instance_url}`), or OAuth with refresh (`oauth: {...}`,
    #: after `crmhub auth login <instance>`; the org's host comes from the token response)
    auth: SalesforceAuth | None = None
    oauth: OAuth2Settings | None = None
    api_version: str = DEFAULT_API_VERSION
    #: custom objects to read besides the standard ones (Foo__c); each is a stream of that name
    custom_objects: list[str] = Field(default_factory=list)
    #: extra fields to read per stream, beyond the defaults and the mapping's
    fields: dict[str, list[str]] = Field(default_factory=dict)
    deletes: Literal["get_deleted", "query_all"] = "get_deleted"
    query_batch_size: int = Field(QUERY_BATCH_MAX, ge=QUERY_BATCH_MIN, le=QUERY_BATCH_MAX)
    write_batch_size: int = Field(COLLECTION_MAX, ge=1, le=COLLECTION_MAX)
    #: stream -> the external-ID field writes upsert by (e.g. {Contact: crmhub_id__c})
    external_id_fields: dict[str, str] = Field(default_factory=dict)
    #: client-side requests per second (Salesforce caps by day and by concurrent long requests)
    requests_per_second: float | None = Field(None, gt=0)
    #: the window the daily limit rolls over; the budget spreads the last calls across it
    limit_window_seconds: float = Field(86_400.0, gt=0)
    #: stop (RateLimited) when the org has this many calls left, leaving them to other integrations
    min_api_remaining: int = Field(0, ge=0)
    timeout_seconds: float = 60.0

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> SalesforceConfig:
        if (self.auth is None) == (self.oauth is None):
            raise ValueError("needs `auth: {access_token, instance_url}` or `oauth: {...}`, not both and not neither")
        return self

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.fullmatch(v):
            raise ValueError(f"api_version must look like v62.0, not {v!r}")
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for names in v.values():
            for name in names:
                soql.field(name)  # a name that is not a Salesforce API name fails here, named
        return v

    @field_validator("external_id_fields")
    @classmethod
    def _ext_fields(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v.values():
            if "." in name:
                raise ValueError(f"an external-ID field is a field of the object itself, not {name!r}")
            soql.field(name)
        return v

    @field_validator("custom_objects")
    @classmethod
    def _customs(cls, v: list[str]) -> list[str]:
        for name in v:
            soql.sobject(name)
            if not name.endswith("__c"):
                raise ValueError(f"custom object {name!r} must be an API name ending in __c")
        return v


def _utc_iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat()


def _sec(d: datetime) -> datetime:
    return d.replace(microsecond=0)


class SalesforceConnector(Connector):
    kind = "salesforce"
    Config = SalesforceConfig
    default_rate: ClassVar[float | None] = None  # the limit is per day: paced from Sforce-Limit-Info
    default_burst: ClassVar[int] = 25

    def __init__(self, config: ConnectorConfig, context: ConnectorContext, *,
                 clock: Any = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, SalesforceConfig)
        self.cfg: SalesforceConfig = config
        self._api: SalesforceApi | None = None
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- declaration -----------------------------------------------------------------------------

    def _objects(self) -> dict[str, SObject]:
        custom = {n: SObject(n, n, ("Id", "Name", "OwnerId", "CreatedDate", "LastModifiedDate", "SystemModstamp"))
                  for n in self.cfg.custom_objects}
        return {**STANDARD, **custom}

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=o.name, target=o.target, primary_key="Id", cursor_kind=CursorKind.TIMESTAMP,
                           reports_deletes=True, accepts_writes=o.name not in ACTIVITY_OBJECTS)
                for o in self._objects().values()]

    def _object(self, stream: str) -> SObject:
        obj = self._objects().get(stream)
        if obj is None:
            raise FatalError(f"salesforce has no stream {stream!r} (it has: {', '.join(self._objects())}); "
                             "add custom objects under `custom_objects:`")
        return obj

    def fields(self, stream: str) -> list[str]:
        """Default fields, the ones the mapping reads (top-level and relationship paths), and config's."""
        obj = self._object(stream)
        hinted = []
        for path in self.context.field_hints.get(stream, ()):
            if "[" in path or path.split(".")[0] == "attributes":
                continue  # a list inside a record, or Salesforce's own metadata: not a field to ask for
            name = path
            try:
                hinted.append(soql.field(name))
            except soql.SoqlError:
                continue  # a path into a nested value the mapping resolves itself
        extra = [soql.field(f) for f in self.cfg.fields.get(stream, [])]
        wanted = [*obj.fields, *hinted, *extra]
        if self.cfg.deletes == "query_all":
            wanted.append("IsDeleted")
        return list(dict.fromkeys(wanted))

    # -- HTTP ------------------------------------------------------------------------------------

    def session(self) -> Session:
        """The one place auth is decided. OAuth replaces this: its `httpx.Auth` and the token
        response's `instance_url` go here, and nothing else in the connector changes."""
        if self.cfg.oauth is not None:
            auth = oauth_auth(self.cfg.oauth, self.context)
            instance_url = str(auth.token.get("instance_url") or "").rstrip("/")
            if not instance_url.startswith(("https://", "http://")):
                raise AuthError(f"{self.name}: the OAuth token has no instance_url; run `crmhub auth login {self.name}`")
            return Session(instance_url=instance_url, api_version=self.cfg.api_version, auth=auth,
                           secrets=tuple(self.cfg.oauth.secrets()))
        assert self.cfg.auth is not None  # the config requires one of the two
        token = self.cfg.auth.access_token.get_secret_value()
        return Session(instance_url=self.cfg.auth.instance_url, api_version=self.cfg.api_version,
                       headers={"Authorization": f"Bearer {token}"}, secrets=(token,))

    @property
    def api(self) -> SalesforceApi:
        if self._api is None:
            s = self.session()
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            client = build_client(base_url=s.instance_url, auth=s.auth,
                                  headers={**s.headers, "Accept": "application/json"},
                                  timeout=self.cfg.timeout_seconds, budget=self.context.budget,
                                  secrets=list(s.secrets), transport=self.context.transport, **kwargs)
            self._api = SalesforceApi(client, s, self.context.budget, limit_window_s=self.cfg.limit_window_seconds,
                                      min_remaining=self.cfg.min_api_remaining)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.client.close()
            self._api = None

    def check(self) -> str:
        data = self.api.json("GET", f"{self.api.session.data_path}/limits")
        daily = data.get("DailyApiRequests") if isinstance(data, dict) else None
        if isinstance(daily, dict):
            return f"token accepted by {self.api.session.instance_url}: {daily.get('Remaining')} of " \
                   f"{daily.get('Max')} API requests left today"
        return f"token accepted by {self.api.session.instance_url}"

    # -- reading ---------------------------------------------------------------------------------

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        obj = self._object(stream)
        c: Cursor = self._checked(stream, cursor) if cursor else {"ts": None, "id": None, "deleted_since": None}
        if c.get("ts") and self.cfg.deletes == "query_all":
            oldest = self._clock() - timedelta(days=RECYCLE_BIN_DAYS)
            if parse_sf_datetime(str(c["ts"])) < oldest:
                raise CursorExpired(f"{stream}: the cursor ({c['ts']}) is older than the recycle bin's "
                                    f"{RECYCLE_BIN_DAYS} days; deletes since then cannot be read")
        pending_deletes = 0
        if cursor and self.cfg.deletes == "get_deleted" and c.get("deleted_since"):
            page = self._read_deleted(obj, c)
            c = dict(page.next_cursor or c)
            if page.deleted:
                yield page
            else:
                pending_deletes = page.requests  # no page of its own: its request is counted with the next
        yield from self._read_changes(obj, c, pending_deletes)

    @staticmethod
    def _checked(stream: str, cursor: Cursor) -> Cursor:
        """A stored cursor this connector can use, or CursorExpired (a recorded full resync) naming
        what is wrong: its values go into SOQL and URLs, so they must be what they claim to be."""
        c = dict(cursor)
        try:
            for key in ("ts", "deleted_since"):
                if c.get(key) is not None:
                    parse_sf_datetime(str(c[key]))
            if c.get("ts") is not None and not isinstance(c.get("id"), str):
                raise ValueError("a timestamp without the Id that breaks its ties")
        except ValueError as err:
            raise CursorExpired(f"{stream}: the stored cursor cannot be used ({err}): {str(cursor)[:200]}") from None
        return c

    def _query(self, obj: SObject, c: Cursor) -> str:
        where = ""
        if c.get("ts"):
            ts = _sec(parse_sf_datetime(str(c["ts"])))
            where = soql.or_(soql.eq("SystemModstamp", ts, ">"),
                             soql.and_(soql.eq("SystemModstamp", ts), soql.eq("Id", str(c["id"]), ">")))
        return soql.select(self.fields(obj.name), obj.name, where=where, order_by=["SystemModstamp", "Id"])

    def _read_changes(self, obj: SObject, c: Cursor, extra_requests: int) -> Iterator[Page]:
        api = self.api
        endpoint = "queryAll" if self.cfg.deletes == "query_all" else "query"
        headers = {"Sforce-Query-Options": f"batchSize={self.cfg.query_batch_size}"}
        after = (parse_sf_datetime(str(c["ts"])), str(c["id"])) if c.get("ts") else None
        next_url: str | None = None
        while True:
            try:
                if next_url is None:
                    data = api.json("GET", f"{api.session.data_path}/{endpoint}", params={"q": self._query(obj, c)},
                                    headers=headers)
                else:
                    data = api.json("GET", next_url, headers=headers)
            except LocatorExpired:
                if next_url is None:
                    raise
                # the locator died mid-read (2 days, or the org's cap): the keyset resumes exactly
                next_url, extra_requests = None, extra_requests + 1
                continue
            if not isinstance(data, dict) or not isinstance(data.get("records"), list):
                raise FatalError(f"Salesforce {endpoint} answered without a records list: {str(data)[:200]}")
            if c.get("deleted_since") is None and self.cfg.deletes == "get_deleted":
                # First load: deletes are read from the vendor's clock when the query ran (its Date
                # header; the query is a snapshot, so a record deleted while later batches are read
                # is still in them). getDeleted itself drops the seconds, so it starts a little early.
                # Not earlier by design: after a purge, a start before it would expire at once, again.
                start = api.server_now or (self._clock() - timedelta(minutes=1))  # our clock: allow skew
                c["deleted_since"] = _utc_iso(start.replace(microsecond=0))
            page = Page(requests=1 + extra_requests)
            extra_requests = 0
            for raw in data["records"]:
                self._take(obj, raw, page, after)
            last = self._last_keyset(data["records"])
            if last is not None:
                c = {**c, "ts": last[0], "id": last[1]}
            page.next_cursor = dict(c)
            yield page
            next_url = data.get("nextRecordsUrl") if not data.get("done", True) else None
            if not next_url:
                return

    @staticmethod
    def _last_keyset(records: list[Any]) -> tuple[str, str] | None:
        for raw in reversed(records):
            if isinstance(raw, dict) and raw.get("Id") and raw.get("SystemModstamp"):
                try:
                    parse_sf_datetime(str(raw["SystemModstamp"]))
                except ValueError:
                    continue
                return str(raw["SystemModstamp"]), str(raw["Id"])
        return None

    def _take(self, obj: SObject, raw: Any, page: Page, after: tuple[datetime, str] | None) -> None:
        if not isinstance(raw, dict) or not raw.get("Id"):
            page.rejected.append(RejectedRecord(None, raw, f"Salesforce {obj.name} record without an Id"))
            return
        ext = str(raw["Id"])
        try:
            stamp = parse_sf_datetime(str(raw.get("SystemModstamp")))
        except ValueError:
            page.rejected.append(RejectedRecord(ext, raw, f"{obj.name} {ext}: SystemModstamp "
                                                          f"{raw.get('SystemModstamp')!r} is not a datetime"))
            return
        if after is not None and (stamp < after[0] or (stamp == after[0] and after[0].microsecond
                                                        and ext <= after[1])):
            # Already read: the literal is the cursor's second, so where Salesforce keeps sub-second
            # stamps the rest of that second comes again. (At a whole second the query's Id > '...'
            # did this, in Salesforce's own Id order.)
            return
        if raw.get("IsDeleted") is True:
            page.deleted.append(ext)
            return
        record = RawRecord(external_id=ext, updated_at=_utc_iso(stamp), data=raw)
        if obj.name in ACTIVITY_OBJECTS:
            try:
                record.activity = activity_event(obj.name, raw, self.cfg, self.api.session.instance_url)
            except (ValueError, TypeError) as err:
                page.rejected.append(RejectedRecord(ext, raw, f"{obj.name} {ext}: {err}"))
                return
        page.records.append(record)

    def _read_deleted(self, obj: SObject, c: Cursor) -> Page:
        api = self.api
        start = _sec(parse_sf_datetime(str(c["deleted_since"])))
        # Within the start's own second (a run right after the last), still ask, with a window of one
        # second: the start is the vendor's clock, so a delete in that second may already be logged.
        # Our clock may run ahead of the vendor's either way; latestDateCovered keeps the next start safe.
        end = max(_sec(self._clock()), start + timedelta(seconds=1))
        data = api.json("GET", f"{api.session.data_path}/sobjects/{soql.sobject(obj.name)}/deleted/",
                        params={"start": _utc_iso(_sec(start)), "end": _utc_iso(_sec(end))})
        if not isinstance(data, dict):
            raise FatalError(f"Salesforce getDeleted answered with something other than an object: {str(data)[:200]}")
        earliest = data.get("earliestDateAvailable")
        if earliest and parse_sf_datetime(str(earliest)) > start:
            raise CursorExpired(f"{obj.name}: deletes since {_utc_iso(start)} are gone (earliestDateAvailable "
                                f"{earliest}); a full resync finds what was deleted")
        gone = [str(d["id"]) for d in data.get("deletedRecords") or [] if isinstance(d, dict) and d.get("id")]
        covered = data.get("latestDateCovered")
        since = start
        if covered:
            since = max(start, parse_sf_datetime(str(covered)))  # never backwards
        return Page(deleted=gone, next_cursor={**c, "deleted_since": _utc_iso(since)}, requests=1)

    # -- writing ---------------------------------------------------------------------------------

    def write(self, stream: str, changes: Sequence[dict[str, Any]]) -> list[WriteResult]:
        """Upsert `changes` (dicts of Salesforce field -> value, each holding the stream's external-ID
        field) through sObject collections, `write_batch_size` (≤200) a call, `allOrNone` false.

        Per-record failures are results; a change may carry `_key` to name its result (default: its
        external-ID value). Upserting by external ID is idempotent, so a retried call cannot create twice.
        """
        obj = self._object(stream)
        if obj.name in ACTIVITY_OBJECTS:
            raise FatalError(f"salesforce does not write {stream} (activities are append-only in the hub)")
        ext_field = self.cfg.external_id_fields.get(stream)
        if not ext_field:
            raise FatalError(f"salesforce cannot upsert {stream}: no external-ID field. Fix: set "
                             f"`external_id_fields: {{{stream}: <Field__c>}}` on this connector")
        return upsert(self.api, obj.name, soql.field(ext_field), changes, self.cfg.write_batch_size)

