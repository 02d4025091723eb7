"""Stripe v1 connector: customers, subscriptions, invoices, charges, payment intents, refunds,
and the subscription changes derived from their events.

Backfill: each object's list endpoint, newest first, `starting_after` paging, 100 a page, fenced
by `created[lte]` at the time the load started. Incremental: the Events API with the newest
applied event id as the cursor (`ending_before=<id>`, each page reversed into chronological
order, as stripe-python's `auto_paging_iter` walks forward). Before a load the newest event of
the stream's types is noted, so every change made during the load is replayed from the events
afterwards (lists only catch creations; updates come only through events).

Events live 30 days. A cursor older than that, or one Stripe no longer knows (`resource_missing`
on `ending_before`), raises `CursorExpired`: the engine records a full resync.

Cursor (opaque to the engine), one of::

    {"phase": "full", "after": <id|None>, "after_created": <s|None>, "until": <s>,
     "event": <evt id|None>, "event_created": <s|None>}
    {"phase": "events", "event": <evt id|None>, "created": <s|None>, "since": <s>}

`event: None` in the events phase means no event of these types existed when the load began:
the next read walks back to `since` once and replays what it finds, oldest first.

Each record's `updated_at` is the time Stripe dated its state: the event's `created` for an
event, the time of the read for a listed object (a list shows the state as of now). The hub's
out-of-order guard compares these times, so an event older than what was applied is dropped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.stripe.objects import (
    activities_for_event,
    activity_for_object,
    derive,
    iso,
    subscription_backfill,
)
from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorExpired,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    Redactor,
    RejectedRecord,
    SkippableRecord,
    StreamSpec,
    WriteResult,
    build_client,
    raise_for_status,
)
from hub.sdk.errors import ConnectorError

__all__ = ["STREAMS", "StripeConfig", "StripeConnector"]

API_VERSION = "2026-06-24.dahlia"  # what stripe-python 16.x pins
LIST_LIMIT = 100
EVENT_RETENTION_DAYS = 30


@dataclass(frozen=True)
class StreamDef:
    path: str  # the list endpoint under /v1
    obj: str  # the `object` of its records
    target: str
    event_types: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()
    reports_deletes: bool = False
    accepts_writes: bool = False


# Event types per stream: explicit, since `customer.*` would also match customer.subscription.*
STREAMS: dict[str, StreamDef] = {
    "customers": StreamDef("customers", "customer", "account",
                           ("customer.created", "customer.updated", "customer.deleted"),
                           reports_deletes=True, accepts_writes=True),
    "subscriptions": StreamDef("subscriptions", "subscription", "opportunity", ("customer.subscription.*",),
                               (("status", "all"),)),  # the list hides canceled ones otherwise
    # invoice.deleted: a draft was deleted; the activity ingest stores the delete as a version
    "invoices": StreamDef("invoices", "invoice", "activity", ("invoice.*",), reports_deletes=True),
    "charges": StreamDef("charges", "charge", "activity",
                         ("charge.succeeded", "charge.failed", "charge.pending", "charge.captured", "charge.refunded",
                          "charge.updated", "charge.expired")),
    "payment_intents": StreamDef("payment_intents", "payment_intent", "activity", ("payment_intent.*",)),
    "refunds": StreamDef("refunds", "refund", "activity", ("refund.*", "charge.refund.updated"),
                         (("expand[]", "data.charge"),)),  # the customer is on the charge
    "subscription_changes": StreamDef("subscriptions", "subscription", "activity",
                                      ("customer.subscription.created", "customer.subscription.updated",
                                       "customer.subscription.deleted"), (("status", "all"),)),
}


class StripeAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_key: SecretStr = Field(description="secret (sk_...) or restricted (rk_..., preferred) key")


class StripeConfig(ConnectorConfig):
    base_url: str = "https://api.stripe.com"
    auth: StripeAuth
    #: every request carries it; events keep the version current when they were created
    stripe_version: str = API_VERSION
    #: a Connect platform reading a connected account
    stripe_account: str | None = None
    #: requests per second shared by the instance's streams (Stripe: 100/s live, 25/s in test mode)
    requests_per_second: float | None = Field(None, gt=0)
    page_size: int = Field(LIST_LIMIT, ge=1, le=LIST_LIMIT)
    event_retention_days: int = Field(EVENT_RETENTION_DAYS, ge=1)
    timeout_seconds: float = 30.0


def _stripe_error(resp: httpx.Response) -> dict[str, Any]:
    try:
        doc = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return {}
    err = doc.get("error") if isinstance(doc, dict) else None
    return err if isinstance(err, dict) else {}


class StripeConnector(Connector):
    kind = "stripe"
    Config = StripeConfig
    default_rate: ClassVar[float | None] = 25.0
    default_burst: ClassVar[int] = 25

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, StripeConfig)
        self.cfg: StripeConfig = config
        self._client: httpx.Client | None = None
        #: seconds since the epoch; a seam for tests of the retention check
        self.clock: Callable[[], float] = time.time
        self._charge_customers: dict[str, str | None] = {}
        self._routes: dict[str, list[str]] = {}
        #: Stripe's clock at the last response (its `Date` header), in seconds
        self._vendor_now: int | None = None

    # -- declaration -----------------------------------------------------------------------------

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=n, target=d.target, primary_key="id", cursor_kind=CursorKind.EVENT_ID,
                           reports_deletes=d.reports_deletes, accepts_writes=d.accepts_writes)
                for n, d in STREAMS.items()]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            key = self.cfg.auth.api_key.get_secret_value()
            headers = {"Authorization": f"Bearer {key}", "Stripe-Version": self.cfg.stripe_version}
            if self.cfg.stripe_account:
                headers["Stripe-Account"] = self.cfg.stripe_account
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            self._client = build_client(base_url=self.cfg.base_url, headers=headers, timeout=self.cfg.timeout_seconds,
                                        budget=self.context.budget, secrets=[key], transport=self.context.transport,
                                        **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _redactor(self) -> Redactor:
        found = getattr(self.client, "redactor", None)
        return found if isinstance(found, Redactor) else Redactor([self.cfg.auth.api_key.get_secret_value()])

    # -- HTTP ------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, params: Sequence[tuple[str, Any]] = (),
              form: Sequence[tuple[str, str]] | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        resp = self.client.request(method, f"/v1/{path}", params=list(params) or None, data=dict(form) if form
                                   else None, headers=headers)
        self._vendor_now = _date_header(resp)
        if resp.status_code >= 400:
            err = _stripe_error(resp)
            if resp.status_code in (400, 404) and err.get("code") == "resource_missing":
                raise _Missing(str(err.get("param") or ""), self._redactor().redact(str(err.get("message"))))
            raise_for_status(resp, self._redactor())
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            text = self._redactor().redact(resp.text[:65536])[:200]
            raise FatalError(f"Stripe answered {resp.status_code} with a body that is not JSON: {text!r}") from None
        if not isinstance(data, dict):
            raise FatalError("Stripe answered with JSON that is not an object")
        return data

    def check(self) -> str:
        self._send("GET", "customers", [("limit", 1)])
        return f"key accepted by {self.cfg.base_url} (Stripe-Version {self.cfg.stripe_version})"

    # -- reading ---------------------------------------------------------------------------------

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream not in STREAMS:
            raise FatalError(f"stripe has no stream {stream!r} (it has: {', '.join(STREAMS)})")
        probe = 0
        if not cursor:
            cursor, probe = self._start(stream), 1
        if cursor.get("phase") == "full":
            last: Cursor = cursor
            for page in self._read_full(stream, cursor, probe):
                last = page.next_cursor or last
                yield page
            cursor = last
        yield from self._read_events(stream, cursor)

    def _event_params(self, stream: str) -> list[tuple[str, Any]]:
        return [("types[]", t) for t in STREAMS[stream].event_types]

    def _start(self, stream: str) -> Cursor:
        """Before a (re)load: the newest event of this stream's types, where the events pick up,
        and Stripe's time then (its `Date` header), which fences the lists and dates what they show."""
        data = self._send("GET", "events", [("limit", 1), *self._event_params(stream)])
        now = self._vendor_now if self._vendor_now is not None else int(self.clock())
        newest = (data.get("data") or [None])[0]
        return {"phase": "full", "after": None, "after_created": None, "until": now,
                "event": newest["id"] if newest else None, "event_created": newest["created"] if newest else None}

    def _read_full(self, stream: str, c: Cursor, probe: int) -> Iterator[Page]:
        d = STREAMS[stream]
        base: list[tuple[str, Any]] = [("limit", self.cfg.page_size), ("created[lte]", int(c["until"])), *d.params]
        while True:
            params = list(base)
            if c.get("after"):
                params.append(("starting_after", c["after"]))
            try:
                data = self._send("GET", d.path, params)
            except _Missing:
                # the object we resumed after is gone (deleted): resume by its creation time instead
                # (records of that second are read again, which the writer absorbs)
                params = [p for p in base if p[0] != "created[lte]"] + [("created[lte]", int(c["after_created"]))]
                data = self._send("GET", d.path, params)
                probe += 1
            rows = [r for r in data.get("data") or [] if isinstance(r, dict)]
            # A listed object is at least as new as the load's start (by Stripe's clock): events from
            # then on are replayed after the load, so an event is never refused against a list read.
            read_at = iso(int(c["until"]))
            if data.get("has_more") and rows:
                c = {**c, "after": rows[-1].get("id"), "after_created": rows[-1].get("created")}
            else:
                c = {"phase": "events", "event": c.get("event"), "created": c.get("event_created"),
                     "since": int(c["until"])}
            yield self._page(stream, rows, read_at, c, 1 + probe)
            probe = 0
            if c["phase"] == "events":
                return

    def _page(self, stream: str, rows: list[dict[str, Any]], read_at: str | None, c: Cursor, requests: int) -> Page:
        page = Page(next_cursor=dict(c), requests=requests)
        d = STREAMS[stream]
        for raw in rows:
            oid = raw.get("id")
            if not oid or raw.get("object") != d.obj:
                page.rejected.append(RejectedRecord(str(oid) if oid else None, raw,
                                                    f"Stripe {d.obj} expected, got {raw.get('object')!r} without an id"
                                                    if not oid else f"Stripe {d.obj} expected, got {raw.get('object')!r}"))
                continue
            try:
                page.records.extend(self._listed(stream, raw, read_at))
            except (ValueError, TypeError, KeyError) as err:
                page.rejected.append(RejectedRecord(str(oid), raw, f"unusable Stripe {d.obj}: {err}"))
        return page

    def _listed(self, stream: str, raw: dict[str, Any], read_at: str | None) -> list[RawRecord]:
        oid = str(raw["id"])
        # activities carry their facts (amounts converted) in `details`; `data` is Stripe's object as is
        if stream == "subscription_changes":
            return [RawRecord(a.external_id, read_at, data=raw, activity=a) for a in subscription_backfill(raw, read_at)]
        if STREAMS[stream].target == "activity":
            customer = self._customer_of_refund(raw) if raw.get("object") == "refund" else None
            act = activity_for_object(raw, read_at, customer)
            return [RawRecord(oid, read_at, data=raw, activity=act)]
        return [RawRecord(oid, read_at, data=derive(raw))]

    def _customer_of_refund(self, refund: dict[str, Any]) -> str | None:
        """A refund does not name its customer; its charge does (expanded on lists, looked up for events)."""
        charge = refund.get("charge")
        if isinstance(charge, dict):
            return charge.get("customer")
        if not charge:
            return None
        if charge not in self._charge_customers:
            if len(self._charge_customers) > 10_000:
                self._charge_customers.clear()
            try:
                self._charge_customers[charge] = self._send("GET", f"charges/{charge}").get("customer")
            except _Missing:
                self._charge_customers[charge] = None  # the refund is kept, attached to no account
        return self._charge_customers[charge]

    # -- events ----------------------------------------------------------------------------------

    def _check_retention(self, c: Cursor) -> None:
        created = c.get("created") if c.get("event") else c.get("since")
        if created is None:
            return
        oldest = self.clock() - self.cfg.event_retention_days * 86400
        if int(created) < oldest:
            raise CursorExpired(f"the cursor's event ({c.get('event') or 'none'}, created {iso(int(created))}) "
                                f"is older than Stripe's {self.cfg.event_retention_days}-day event retention")

    def _read_events(self, stream: str, c: Cursor) -> Iterator[Page]:
        self._check_retention(c)
        if not c.get("event"):
            yield from self._events_since(stream, c)
            return
        while True:
            params = [("limit", self.cfg.page_size), ("ending_before", c["event"]), *self._event_params(stream)]
            try:
                data = self._send("GET", "events", params)
            except _Missing as err:
                raise CursorExpired(f"Stripe no longer has the cursor's event {c['event']}: {err}") from None
            evs = [e for e in data.get("data") or [] if isinstance(e, dict)]
            if not evs:
                return
            c = {"phase": "events", "event": evs[0]["id"], "created": evs[0].get("created"), "since": c.get("since")}
            yield self._event_page(stream, evs[::-1], c)  # newest first on the wire; apply oldest first
            if not data.get("has_more"):
                return

    def _events_since(self, stream: str, c: Cursor) -> Iterator[Page]:
        """No event id to start from: walk back to `since` once, then replay oldest first.

        Holds the events newer than the load's start in memory (one load's worth of changes).
        """
        since = int(c.get("since") or 0)
        found: list[dict[str, Any]] = []
        after: str | None = None
        requests = 0
        while True:
            params = [("limit", self.cfg.page_size), ("created[gte]", since), *self._event_params(stream)]
            if after:
                params.append(("starting_after", after))
            data = self._send("GET", "events", params)
            requests += 1
            evs = [e for e in data.get("data") or [] if isinstance(e, dict)]
            found.extend(evs)
            if not data.get("has_more") or not evs:
                break
            after = evs[-1]["id"]
        found.reverse()
        if not found:
            return
        size = self.cfg.page_size
        for i in range(0, len(found), size):
            chunk = found[i:i + size]
            c = {"phase": "events", "event": chunk[-1]["id"], "created": chunk[-1].get("created"), "since": since}
            page = self._event_page(stream, chunk, c)
            page.requests = requests if i == 0 else 0
            yield page

    def _event_page(self, stream: str, events: list[dict[str, Any]], c: Cursor) -> Page:
        page = Page(next_cursor=dict(c))
        for ev in events:
            try:
                records, deleted = self.records_for_event(stream, ev)
            except SkippableRecord as err:
                page.rejected.append(RejectedRecord(err.external_id, err.payload, err.reason))
                continue
            page.records.extend(records)
            page.deleted.extend(deleted)
        return page

    def records_for_event(self, stream: str, ev: dict[str, Any]) -> tuple[list[RawRecord], list[str]]:
        """What one event means for one stream: records (a snapshot of the object, dated by the
        event) and deleted ids. An event of another type or object is nothing."""
        d = STREAMS[stream]
        etype = ev.get("type")
        if not isinstance(etype, str) or not _matches(etype, d.event_types):
            return [], []
        data = ev.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        eid = ev.get("id")
        if not isinstance(obj, dict) or not obj.get("id") or not isinstance(ev.get("created"), int):
            raise SkippableRecord(f"Stripe event {eid} ({etype}) has no data.object with an id, or no created time",
                                  external_id=str(eid) if eid else None, payload=ev)
        if obj.get("object") != d.obj:
            return [], []
        at = iso(ev["created"])
        oid = str(obj["id"])
        if etype.endswith(".deleted") and d.reports_deletes:
            return [], [oid]
        if stream == "subscription_changes":
            return [RawRecord(a.external_id, at, data=obj, activity=a) for a in activities_for_event(ev)], []
        if d.target == "activity":
            customer = self._customer_of_refund(obj) if d.obj == "refund" else None
            return [RawRecord(oid, at, data=obj, activity=activity_for_object(obj, at, customer))], []
        return [RawRecord(oid, at, data=derive(obj))], []

    def webhook_pages(self, event: dict[str, Any]) -> list[tuple[str, Page]]:
        """A delivered event as pages for every enabled stream it concerns (records dated by the event)."""
        if not isinstance(event, dict) or event.get("object") != "event" or not isinstance(event.get("type"), str):
            raise SkippableRecord("not a Stripe event object", external_id=str(event.get("id") or "") or None
                                  if isinstance(event, dict) else None, payload=event)
        out: list[tuple[str, Page]] = []
        for stream in self._streams_for(event["type"]):
            records, deleted = self.records_for_event(stream, event)
            if records or deleted:
                out.append((stream, Page(records=records, deleted=deleted, requests=0)))
        return out

    def _streams_for(self, etype: str) -> list[str]:
        """The enabled streams an event type concerns (remembered per type: a few dozen types exist)."""
        routes = self._routes
        found = routes.get(etype)
        if found is None:
            if len(routes) > 1000:
                routes.clear()
            found = routes[etype] = [s.name for s in self.enabled_streams()
                                     if _matches(etype, STREAMS[s.name].event_types)]
        return found

    # -- writing ---------------------------------------------------------------------------------

    def write(self, stream: str, changes: Sequence[dict[str, Any]]) -> list[WriteResult]:
        """Update customers: `{"external_id": "cus_...", "metadata": {...}, "name": ..., "email": ...,
        "description": ..., "phone": ..., "key": <idempotency key>}` -> `POST /v1/customers/{id}`.

        Every request carries an `Idempotency-Key` (the change's `key`, else a fresh UUID4): a retry
        after a timeout or a 5xx replays Stripe's first answer instead of applying twice.
        """
        if stream != "customers":
            raise NotImplementedError(f"stripe does not write {stream}")
        out: list[WriteResult] = []
        for ch in changes:
            ext = ch.get("external_id")
            key = str(ch.get("key") or uuid.uuid4())
            form: list[tuple[str, str]] = []
            for k in ("name", "email", "description", "phone"):
                if k in ch:
                    form.append((k, "" if ch[k] is None else str(ch[k])))
            for mk, mv in (ch.get("metadata") or {}).items():
                form.append((f"metadata[{mk}]", "" if mv is None else str(mv)))
            if not ext or not form:
                out.append(WriteResult(ext, False, error="a customer change needs external_id and a field", key=key))
                continue
            try:
                self._send("POST", f"customers/{ext}", form=form, idempotency_key=key)
            except (ConnectorError, _Missing) as err:
                out.append(WriteResult(str(ext), False, error=str(err), key=key))
                continue
            out.append(WriteResult(str(ext), True, key=key))
        return out


class _Missing(Exception):
    """Stripe's `resource_missing`: an id it does not know (any more)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _date_header(resp: httpx.Response) -> int | None:
    value = resp.headers.get("date")
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def _matches(etype: str, patterns: tuple[str, ...]) -> bool:
    return any(etype == p or (p.endswith("*") and etype.startswith(p[:-1])) for p in patterns)
