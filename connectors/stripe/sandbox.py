"""A local simulator of Stripe's v1 API for demos, tests and benchmarks.

It follows Stripe's documented shapes, not the connector's assumptions (sources: the API
reference's "Pagination", "Errors", "Idempotent requests" and "Events" pages; object shapes
trimmed from `stripe/openapi` `openapi/fixtures3.json`):

- ``GET /v1/{customers|subscriptions|invoices|charges|payment_intents|refunds|events}``:
  ``{"object": "list", "url", "has_more", "data"}``, newest first; ``limit`` 1-100 (default 10),
  ``starting_after`` / ``ending_before`` (object ids, mutually exclusive), ``created`` and
  ``created[gt|gte|lt|lte]``; ``customer`` on the billing lists; subscriptions hide ``canceled`` ones
  unless ``status=all``; events take ``type`` (``*`` wildcard) or ``types[]`` (at most 20).
- ``GET /v1/{type}/{id}``; a deleted customer is ``{"id", "object": "customer", "deleted": true}``.
- ``POST /v1/customers``, ``POST /v1/customers/{id}`` (form-encoded, ``metadata[k]=v``),
  ``DELETE /v1/customers/{id}``; an ``Idempotency-Key`` replays the first answer (header
  ``Idempotent-Replayed: true``), and the same key with other parameters is a 400 ``idempotency_error``.
- Errors: ``{"error": {"type", "code", "message", "param", "doc_url"}}`` with Stripe's statuses
  (400 invalid_request_error, 401 for a bad key, 404 resource_missing, 429 rate_limit, 500 api_error).
- Events are kept for ``retention_days`` (30, as Stripe); ``expire_events(before=...)`` drops older
  ones on demand, and an ``ending_before``/``starting_after`` naming a dropped event is a 400
  ``resource_missing``, as for any unknown id.
- ``deliver(url, secret, ...)`` POSTs events to a webhook endpoint signed as Stripe signs them
  (``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``), optionally shuffled or doubled.

Sandbox control (not Stripe's, no auth): ``POST /_sandbox/deliver`` ``{"url", "secret", "event_ids"?,
"shuffle"?, "duplicate"?}``, ``POST /_sandbox/expire-events`` ``{"before"?}``, ``POST /_sandbox/fail``
``{"count", "status", "retry_after"?}``.

Auth: ``Authorization: Bearer <key>`` or Basic with the key as the user name. Run it in-process
with ``SandboxServer`` or as a process: ``python -m connectors.stripe.sandbox --customers 1000``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import random
import socket
import string
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["API_VERSION", "SandboxServer", "SandboxStore", "StripeError", "create_app", "main", "sign"]

API_VERSION = "2026-06-24.dahlia"
MAX_LIMIT = 100
MAX_TYPES = 20
LISTS = {"customers": "customer", "subscriptions": "subscription", "invoices": "invoice", "charges": "charge",
         "payment_intents": "payment_intent", "refunds": "refund", "events": "event"}
PREFIX = {"customer": "cus", "subscription": "sub", "invoice": "in", "charge": "ch", "payment_intent": "pi",
          "refund": "re", "event": "evt", "subscription_item": "si", "price": "price", "product": "prod"}
_ALNUM = string.ascii_letters + string.digits


class StripeError(Exception):
    """An error answer in Stripe's envelope."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"https://docs.stripe.com/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        return {"error": err}


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe sends for `payload`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass
class _Fail:
    remaining: int
    status: int
    retry_after: float | None


@dataclass
class SandboxStore:
    """Stripe's objects in memory; every change appends the event Stripe would emit.

    `clock` is seconds since the epoch (real time by default, so event retention is real).
    """

    customers: int = 0
    seed: int = 7
    currency: str = "usd"
    clock: Callable[[], float] = time.time
    retention_days: int = 30
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: creation order per object type (the list order, reversed)
    order: dict[str, list[str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.rng = random.Random(self.seed)
        self._fail: _Fail | None = None
        self._idem: dict[str, tuple[str, int, bytes]] = {}
        self._seq = 0
        start = int(self.clock()) - self.customers - 10
        for i in range(self.customers):
            self.create_customer(name=f"Customer {i + 1:05d} Ltd", email=f"billing{i + 1}@customer{i + 1}.example",
                                 at=start + i)

    # -- ids, time, events ---------------------------------------------------------------------

    def new_id(self, obj: str) -> str:
        return f"{PREFIX[obj]}_" + "".join(self.rng.choice(_ALNUM) for _ in range(24 if obj == "event" else 14))

    def now(self) -> int:
        return int(self.clock())

    def _put(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj["object"]
        table = self.objects.setdefault(kind, {})
        if obj["id"] not in table:
            self.order.setdefault(kind, []).append(obj["id"])
        table[obj["id"]] = obj
        return obj

    def emit(self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None,
             at: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Append the event Stripe sends for a change: `data.object` is a snapshot of the object."""
        with self.lock:
            self._seq += 1
            data: dict[str, Any] = {"object": orjson.loads(orjson.dumps(obj))}
            if previous is not None:
                data["previous_attributes"] = previous
            ev = {"id": self.new_id("event"), "object": "event", "api_version": API_VERSION,
                  "created": self.now() if at is None else at, "data": data, "livemode": False,
                  "pending_webhooks": 1, "request": {"id": None, "idempotency_key": idempotency_key},
                  "type": type_}
            ev["_seq"] = self._seq  # the sandbox's own order; never sent
            self.events.append(ev)
            return ev

    @staticmethod
    def public(ev: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in ev.items() if not k.startswith("_")}

    # -- customers -----------------------------------------------------------------------------

    def create_customer(self, *, name: str | None = None, email: str | None = None, currency: str | None = None,
                        metadata: dict[str, str] | None = None, at: int | None = None, **extra: Any) -> dict[str, Any]:
        with self.lock:
            created = self.now() if at is None else at
            cus = self._put({
                "id": self.new_id("customer"), "object": "customer", "address": None, "balance": 0,
                "created": created, "currency": currency or self.currency, "default_source": None,
                "delinquent": False, "description": None, "discount": None, "email": email,
                "invoice_prefix": "".join(self.rng.choice(string.ascii_uppercase) for _ in range(8)),
                "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                     "rendering_options": None},
                "livemode": False, "metadata": dict(metadata or {}), "name": name, "phone": None,
                "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None, **extra,
            })
            self.emit("customer.created", cus, at=created)
            return cus

    def update_customer(self, cid: str, *, idempotency_key: str | None = None, **changes: Any) -> dict[str, Any]:
        with self.lock:
            cus = self._live("customer", cid)
            previous: dict[str, Any] = {}
            for k, v in changes.items():
                if k == "metadata":
                    merged = {**cus["metadata"], **{mk: mv for mk, mv in v.items() if mv != ""}}
                    for mk, mv in v.items():
                        if mv == "":  # Stripe: an empty value unsets the key
                            merged.pop(mk, None)
                    if merged != cus["metadata"]:
                        previous["metadata"] = dict(cus["metadata"])
                        cus["metadata"] = merged
                elif cus.get(k) != v:
                    previous[k] = cus.get(k)
                    cus[k] = v
            if previous:
                self.emit("customer.updated", cus, previous, idempotency_key=idempotency_key)
            return cus

    def modify(self, count: int = 0, ids: Sequence[str] | None = None, **changes: Any) -> list[str]:
        """Change `count` customers (the oldest live ones first) or `ids`: a new name unless given."""
        with self.lock:
            picks = list(ids) if ids else self.ids("customers")[::-1][:count]
            for cid in picks:
                self._seq_name = getattr(self, "_seq_name", 0) + 1
                self.update_customer(cid, **(changes or {"name": f"Renamed {self._seq_name} Ltd"}))
            return picks

    def delete_customer(self, cid: str) -> dict[str, Any]:
        with self.lock:
            cus = self._live("customer", cid)
            cus["_deleted"] = True
            self.emit("customer.deleted", cus)
            return {"id": cid, "object": "customer", "deleted": True}

    # -- billing ---------------------------------------------------------------------------------

    def create_subscription(self, customer: str, *, unit_amount: int = 2000, currency: str | None = None,
                            interval: str = "month", interval_count: int = 1, quantity: int = 1,
                            nickname: str = "Pro", at: int | None = None) -> dict[str, Any]:
        with self.lock:
            self._live("customer", customer)
            now = self.now() if at is None else at
            end = now + _period_seconds(interval, interval_count)
            price = self._price(unit_amount, currency or self.currency, interval, interval_count, nickname)
            sid = self.new_id("subscription")
            item = {"id": self.new_id("subscription_item"), "object": "subscription_item", "created": now,
                    "current_period_start": now, "current_period_end": end, "metadata": {}, "price": price,
                    "quantity": quantity, "subscription": sid}
            sub = self._put({
                "id": sid, "object": "subscription", "billing_cycle_anchor": now, "cancel_at": None,
                "cancel_at_period_end": False, "canceled_at": None, "collection_method": "charge_automatically",
                "created": now, "currency": price["currency"], "customer": customer, "days_until_due": None,
                "ended_at": None,
                "items": {"object": "list", "data": [item], "has_more": False,
                          "url": f"/v1/subscription_items?subscription={sid}"},
                "latest_invoice": None, "livemode": False, "metadata": {}, "start_date": now, "status": "active",
                "trial_end": None, "trial_start": None,
            })
            self.emit("customer.subscription.created", sub, at=now)
            return sub

    def _price(self, unit_amount: int, currency: str, interval: str, interval_count: int, nickname: str) -> dict[str, Any]:
        return {"id": self.new_id("price"), "object": "price", "active": True, "billing_scheme": "per_unit",
                "currency": currency, "nickname": nickname, "product": self.new_id("product"),
                "recurring": {"interval": interval, "interval_count": interval_count, "usage_type": "licensed"},
                "type": "recurring", "unit_amount": unit_amount}

    def change_plan(self, sid: str, *, unit_amount: int | None = None, quantity: int | None = None,
                    nickname: str | None = None) -> dict[str, Any]:
        """An upgrade or downgrade: the item's price (and quantity) change, `previous_attributes` says from what."""
        with self.lock:
            sub = self._live("subscription", sid)
            item = sub["items"]["data"][0]
            before = orjson.loads(orjson.dumps(sub["items"]))
            price = item["price"]
            if unit_amount is not None or nickname is not None:
                item["price"] = self._price(price["unit_amount"] if unit_amount is None else unit_amount,
                                            price["currency"], price["recurring"]["interval"],
                                            price["recurring"]["interval_count"], nickname or price["nickname"])
            if quantity is not None:
                item["quantity"] = quantity
            self.emit("customer.subscription.updated", sub, {"items": before})
            return sub

    def schedule_cancel(self, sid: str, cancel_at: int) -> dict[str, Any]:
        with self.lock:
            sub = self._live("subscription", sid)
            previous = {"cancel_at": sub["cancel_at"]}
            sub["cancel_at"] = cancel_at
            self.emit("customer.subscription.updated", sub, previous)
            return sub

    def cancel_subscription(self, sid: str) -> dict[str, Any]:
        """Ends it now: Stripe sends `customer.subscription.deleted`, and the object stays retrievable."""
        with self.lock:
            sub = self._live("subscription", sid)
            now = self.now()
            sub.update(status="canceled", canceled_at=now, ended_at=now)
            self.emit("customer.subscription.deleted", sub)
            return sub

    def pay(self, customer: str, amount: int, currency: str | None = None, *, fail: bool = False,
            invoice: bool = False, description: str | None = None) -> dict[str, Any]:
        """A payment: a PaymentIntent and its Charge (and, with `invoice`, a paid or open invoice)."""
        with self.lock:
            self._live("customer", customer)
            cur = currency or self.currency
            now = self.now()
            pi_id, ch_id = self.new_id("payment_intent"), self.new_id("charge")
            failure = {"failure_code": "card_declined", "failure_message": "Your card was declined."} if fail \
                else {"failure_code": None, "failure_message": None}
            charge = self._put({
                "id": ch_id, "object": "charge", "amount": amount, "amount_captured": 0 if fail else amount,
                "amount_refunded": 0, "balance_transaction": None, "captured": not fail, "created": now,
                "currency": cur, "customer": customer, "description": description, "disputed": False,
                "livemode": False, "metadata": {}, "outcome": {"network_status": "declined_by_network" if fail
                                                               else "approved_by_network",
                                                               "type": "issuer_declined" if fail else "authorized"},
                "paid": not fail, "payment_intent": pi_id, "receipt_url": None, "refunded": False,
                "refunds": {"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{ch_id}/refunds"},
                "status": "failed" if fail else "succeeded", **failure,
            })
            pi = self._put({
                "id": pi_id, "object": "payment_intent", "amount": amount, "amount_received": 0 if fail else amount,
                "created": now, "currency": cur, "customer": customer, "description": description,
                "last_payment_error": ({"code": "card_declined", "message": "Your card was declined.",
                                        "type": "card_error"} if fail else None),
                "latest_charge": ch_id, "livemode": False, "metadata": {},
                "status": "requires_payment_method" if fail else "succeeded",
            })
            self.emit("payment_intent.created", pi)
            self.emit("charge.failed" if fail else "charge.succeeded", charge)
            self.emit("payment_intent.payment_failed" if fail else "payment_intent.succeeded", pi)
            if invoice:
                inv_id = self.new_id("invoice")
                inv = self._put({
                    "id": inv_id, "object": "invoice", "amount_due": amount, "amount_paid": 0 if fail else amount,
                    "amount_remaining": amount if fail else 0, "created": now, "currency": cur,
                    "customer": customer, "hosted_invoice_url": None, "livemode": False, "metadata": {},
                    "number": f"{inv_id[-8:].upper()}-0001", "period_end": now, "period_start": now,
                    "status": "open" if fail else "paid",
                    "status_transitions": {"finalized_at": now, "paid_at": None if fail else now},
                    "subtotal": amount, "total": amount,
                })
                self.emit("invoice.created", inv)
                self.emit("invoice.payment_failed" if fail else "invoice.paid", inv)
            return charge

    def refund(self, charge_id: str, amount: int | None = None, reason: str | None = None) -> dict[str, Any]:
        with self.lock:
            ch = self._live("charge", charge_id)
            amt = ch["amount"] - ch["amount_refunded"] if amount is None else amount
            now = self.now()
            re_ = self._put({"id": self.new_id("refund"), "object": "refund", "amount": amt, "charge": charge_id,
                             "created": now, "currency": ch["currency"], "metadata": {},
                             "payment_intent": ch["payment_intent"], "reason": reason, "status": "succeeded"})
            previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
            ch["amount_refunded"] += amt
            ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
            self.emit("refund.created", re_)
            self.emit("charge.refunded", ch, previous)
            return re_

    # -- retention, faults -------------------------------------------------------------------------

    def expire_events(self, before: int | None = None) -> int:
        """Drop events created before `before` (default: outside the retention window now)."""
        with self.lock:
            cut = self.now() - self.retention_days * 86400 if before is None else before
            kept = [e for e in self.events if e["created"] >= cut]
            dropped = len(self.events) - len(kept)
            self.events = kept
            return dropped

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        with self.lock:
            self._fail = _Fail(n, status, retry_after) if n > 0 else None

    def take_failure(self) -> _Fail | None:
        with self.lock:
            f = self._fail
            if f is None:
                return None
            f.remaining -= 1
            if f.remaining <= 0:
                self._fail = None
            return f

    # -- reading -----------------------------------------------------------------------------------

    def _live(self, kind: str, oid: str) -> dict[str, Any]:
        obj = self.objects.get(kind, {}).get(oid)
        if obj is None or obj.get("_deleted"):
            raise StripeError(404, f"No such {kind}: '{oid}'", code="resource_missing", param="id")
        return obj

    def ids(self, path: str) -> list[str]:
        """Live ids of a list endpoint, newest first (the list order)."""
        kind = LISTS[path]
        with self.lock:
            if kind == "event":
                return [e["id"] for e in reversed(self.events)]
            table = self.objects.get(kind, {})
            live = [i for i in self.order.get(kind, []) if not table[i].get("_deleted")]
            live.sort(key=lambda i: table[i]["created"])  # stable: creation order within a second
            return live[::-1]

    def position(self, path: str, oid: str) -> int:
        """Where `oid` sits from the oldest end of its list (for ordering cursors in tests)."""
        with self.lock:
            if path == "events":
                return next((e["_seq"] for e in self.events if e["id"] == oid), -1)
            table = self.objects.get(LISTS[path], {})
            return self.order.get(LISTS[path], []).index(oid) if oid in table else -1

    def retrieve(self, path: str, oid: str) -> dict[str, Any]:
        kind = LISTS[path]
        with self.lock:
            if kind == "event":
                ev = next((e for e in self.events if e["id"] == oid), None)
                if ev is None:
                    raise StripeError(404, f"No such event: '{oid}'", code="resource_missing", param="id")
                return self.public(ev)
            obj = self.objects.get(kind, {}).get(oid)
            if obj is None:
                raise StripeError(404, f"No such {kind}: '{oid}'", code="resource_missing", param="id")
            if obj.get("_deleted"):
                return {"id": oid, "object": kind, "deleted": True}
            return {k: v for k, v in obj.items() if not k.startswith("_")}

    def list_page(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        kind = LISTS[path]
        q = _Query(params)
        limit = q.integer("limit", 10)
        if not 1 <= limit <= MAX_LIMIT:
            raise StripeError(400, f"Invalid integer: {limit}. This value must be between 1 and {MAX_LIMIT}.",
                              code="parameter_invalid_integer", param="limit")
        after, before = q.one("starting_after"), q.one("ending_before")
        if after and before:
            raise StripeError(400, "You may only specify one of these parameters: ending_before, starting_after.",
                              code="parameter_unknown", param="ending_before")
        with self.lock:
            if kind == "event":
                rows = [self.public(e) for e in reversed(self.events)]
                rows = _filter_types(rows, q)
            else:
                table = self.objects.get(kind, {})
                rows = [{k: v for k, v in table[i].items() if not k.startswith("_")} for i in self.ids(path)]
                customer = q.one("customer")
                if customer:
                    rows = [r for r in rows if r.get("customer") == customer]
                if kind == "subscription":
                    status = q.one("status")
                    if status != "all":
                        rows = [r for r in rows if (r["status"] == status if status else r["status"] != "canceled")]
            rows = [r for r in rows if q.created_ok(r["created"])]
            ids = [r["id"] for r in rows]
            cursor = after or before
            if cursor is not None:
                if cursor not in ids:
                    # Stripe checks the object exists (and belongs to this list): an expired event is gone
                    if (kind == "event" and not any(e["id"] == cursor for e in self.events)) \
                            or (kind != "event" and cursor not in self.objects.get(kind, {})):
                        raise StripeError(400, f"No such {kind}: '{cursor}'", code="resource_missing",
                                          param="starting_after" if after else "ending_before")
                    rows = []  # it exists but the filters hide it
                    page, more = [], False
                else:
                    k = ids.index(cursor)
                    if after:
                        page, more = rows[k + 1:k + 1 + limit], len(rows) > k + 1 + limit
                    else:
                        lo = max(0, k - limit)
                        page, more = rows[lo:k], lo > 0
            else:
                page, more = rows[:limit], len(rows) > limit
        return {"object": "list", "data": page, "has_more": more, "url": f"/v1/{path}"}

    # -- webhooks out ------------------------------------------------------------------------------

    def deliver(self, url: str, secret: str, event_ids: Iterable[str] | None = None, *, shuffle: bool = False,
                duplicate: bool = False, timestamp: int | None = None, client: httpx.Client | None = None
                ) -> list[int]:
        """POST events (default: all, oldest first) to `url` signed with `secret`; the HTTP statuses.

        `shuffle` sends them in a random order and `duplicate` sends each twice, as Stripe may.
        """
        with self.lock:
            wanted = set(event_ids) if event_ids is not None else None
            evs = [self.public(e) for e in self.events if wanted is None or e["id"] in wanted]
        if shuffle:
            self.rng.shuffle(evs)
        if duplicate:
            evs = [e for ev in evs for e in (ev, ev)]
        own = client is None
        http = client or httpx.Client(timeout=30)
        try:
            out = []
            for ev in evs:
                body = orjson.dumps(ev)
                t = int(self.clock()) if timestamp is None else timestamp
                r = http.post(url, content=body, headers={"Content-Type": "application/json; charset=utf-8",
                                                          "Stripe-Signature": sign(secret, body, t),
                                                          "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
                out.append(r.status_code)
            return out
        finally:
            if own:
                http.close()


def _period_seconds(interval: str, count: int) -> int:
    return count * {"day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}[interval]


class _Query:
    def __init__(self, params: list[tuple[str, str]]):
        self.params = params

    def one(self, key: str) -> str | None:
        for k, v in self.params:
            if k == key:
                return v
        return None

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.params if k == key]

    def integer(self, key: str, default: int) -> int:
        v = self.one(key)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise StripeError(400, f"Invalid integer: {v}", code="parameter_invalid_integer", param=key) from None

    def created_ok(self, created: int) -> bool:
        for op, test in (("created", lambda a, b: a == b), ("created[gt]", lambda a, b: a > b),
                         ("created[gte]", lambda a, b: a >= b), ("created[lt]", lambda a, b: a < b),
                         ("created[lte]", lambda a, b: a <= b)):
            v = self.one(op)
            if v is not None and not test(created, self.integer(op, 0)):
                return False
        return True


def _filter_types(rows: list[dict[str, Any]], q: _Query) -> list[dict[str, Any]]:
    one, many = q.one("type"), q.all("types[]")
    if one and many:
        raise StripeError(400, "You may only specify one of these parameters: type, types.", param="types")
    if len(many) > MAX_TYPES:
        raise StripeError(400, f"You may pass at most {MAX_TYPES} types.", param="types")
    wanted = many or ([one] if one else [])
    if not wanted:
        return rows

    def match(t: str) -> bool:
        return any(t == w or (w.endswith("*") and t.startswith(w[:-1])) for w in wanted)
    return [r for r in rows if match(r["type"])]


# ---- HTTP --------------------------------------------------------------------------------------

def _answer(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def _key_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def _form(raw: bytes) -> dict[str, Any]:
    """Stripe's form encoding: `metadata[plan]=pro` nests one level."""
    out: dict[str, Any] = {}
    for k, v in parse_qsl(raw.decode(), keep_blank_values=True):
        if "[" in k and k.endswith("]"):
            head, _, sub = k[:-1].partition("[")
            out.setdefault(head, {})[sub] = v
        else:
            out[k] = v
    return out


UPDATABLE = {"name", "email", "description", "phone", "metadata"}


def create_app(store: SandboxStore, api_key: str | None = "sk_test_sandbox") -> Starlette:
    """The ASGI app over `store`; `api_key` None accepts any request."""

    def guard(request: Request) -> Response | None:
        store.requests.append((request.method, request.url.path, dict(request.headers)))
        if api_key is not None and _key_of(request) != api_key:
            key = _key_of(request)
            shown = f"{key[:7]}{'*' * 12}{key[-4:]}" if key and len(key) > 12 else "(none)"
            message = ("You did not provide an API key." if key is None
                       else f"Invalid API Key provided: {shown}")
            return _answer(401, StripeError(401, message).body(), headers(request))
        fail = store.take_failure()
        if fail is not None:
            extra = {"Retry-After": str(fail.retry_after)} if fail.retry_after is not None else {}
            if fail.status == 429:
                err = StripeError(429, "Request rate limit exceeded. Learn more about rate limits here "
                                  "https://docs.stripe.com/rate-limits.", code="rate_limit")
            else:
                err = StripeError(fail.status, "An unknown error occurred", type_="api_error")
            return _answer(fail.status, err.body(), {**headers(request), **extra})
        return None

    def headers(request: Request) -> dict[str, str]:
        return {"Date": formatdate(store.clock(), usegmt=True),  # the store's clock is Stripe's
                "Stripe-Version": request.headers.get("stripe-version") or API_VERSION,
                "Request-Id": "req_" + "".join(store.rng.choice(_ALNUM) for _ in range(14))}

    async def list_or_create(request: Request) -> Response:
        path = request.path_params["path"]
        if path not in LISTS:
            return _answer(404, StripeError(404, f"Unrecognized request URL (GET: /v1/{path}).").body())
        denied = guard(request)
        if denied is not None:
            return denied
        try:
            if request.method == "POST":
                if path != "customers":
                    raise StripeError(400, f"The sandbox creates only customers, not {path}.")
                return await _idempotent(request, lambda form: store.create_customer(
                    **{k: v for k, v in form.items() if k in UPDATABLE | {"currency"}}), headers(request))
            return _answer(200, store.list_page(path, list(request.query_params.multi_items())), headers(request))
        except StripeError as err:
            return _answer(err.status, err.body(), headers(request))

    async def one(request: Request) -> Response:
        path, oid = request.path_params["path"], request.path_params["oid"]
        if path not in LISTS:
            return _answer(404, StripeError(404, f"Unrecognized request URL (GET: /v1/{path}/{oid}).").body())
        denied = guard(request)
        if denied is not None:
            return denied
        try:
            if request.method == "GET":
                return _answer(200, store.retrieve(path, oid), headers(request))
            if path != "customers":
                raise StripeError(400, f"The sandbox updates only customers, not {path}.")
            if request.method == "DELETE":
                return _answer(200, store.delete_customer(oid), headers(request))
            key = request.headers.get("idempotency-key")

            def update(form: dict[str, Any]) -> dict[str, Any]:
                unknown = sorted(set(form) - UPDATABLE)
                if unknown:
                    raise StripeError(400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown",
                                      param=unknown[0])
                return store.update_customer(oid, idempotency_key=key, **form)
            return await _idempotent(request, update, headers(request))
        except StripeError as err:
            return _answer(err.status, err.body(), headers(request))

    async def _idempotent(request: Request, run: Callable[[dict[str, Any]], dict[str, Any]],
                          hdrs: dict[str, str]) -> Response:
        raw = await request.body()
        key = request.headers.get("idempotency-key")
        if key is not None and len(key) > 255:
            raise StripeError(400, "Idempotency keys may be at most 255 characters.", code="idempotency_key_too_long")
        fingerprint = hashlib.sha256(request.url.path.encode() + b"?" + raw).hexdigest()
        if key is not None:
            with store.lock:
                seen = store._idem.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                      "they were first used with.", type_="idempotency_error",
                                      code="idempotency_key_in_use")
                return Response(seen[2], status_code=seen[1], media_type="application/json",
                                headers={**hdrs, "Idempotent-Replayed": "true", "Idempotency-Key": key})
        try:
            status, body = 200, orjson.dumps(run(_form(raw)))
        except StripeError as err:
            status, body = err.status, orjson.dumps(err.body())
        if key is not None:
            with store.lock:
                store._idem[key] = (fingerprint, status, body)  # stored even when it failed, as Stripe does
            hdrs = {**hdrs, "Idempotency-Key": key}
        return Response(body, status_code=status, media_type="application/json", headers=hdrs)

    async def control(request: Request) -> Response:
        """Sandbox control, not Stripe's (no auth): deliver signed webhooks, expire events, inject faults."""
        action = request.path_params["action"]
        doc = orjson.loads(await request.body() or b"{}")
        if action == "deliver":
            statuses = await run_in_threadpool(store.deliver, str(doc["url"]), str(doc["secret"]),
                                               doc.get("event_ids"), shuffle=bool(doc.get("shuffle")),
                                               duplicate=bool(doc.get("duplicate")))
            return _answer(200, {"statuses": statuses})
        if action == "expire-events":
            return _answer(200, {"dropped": store.expire_events(doc.get("before"))})
        if action == "fail":
            store.fail_next(int(doc.get("count", 1)), int(doc.get("status", 500)), doc.get("retry_after"))
            return _answer(200, {"ok": True})
        return _answer(404, {"error": f"unknown sandbox action {action!r}"})

    return Starlette(routes=[
        Route("/_sandbox/{action}", control, methods=["POST"]),
        Route("/v1/{path}", list_or_create, methods=["GET", "POST"]),
        Route("/v1/{path}/{oid}", one, methods=["GET", "POST", "DELETE"]),
    ])


# ---- serving -----------------------------------------------------------------------------------

class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._on_ready()


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, ws="none", date_header=False)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class SandboxServer:
    """Serve a store on loopback from a background thread (port 0: a free port)::

        with SandboxServer(SandboxStore(customers=50)) as server:
            httpx.get(f"{server.url}/v1/customers", headers={"Authorization": "Bearer sk_test_sandbox"})
    """

    def __init__(self, store: SandboxStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = "sk_test_sandbox") -> None:
        self.store = store if store is not None else SandboxStore()
        self.host, self.port, self.api_key = host, port, api_key
        self._app = create_app(self.store, api_key)
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> SandboxServer:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        server = self._server = _Uvicorn(_config(self._app), ready.set)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"stripe-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"Stripe sandbox did not start on {self.url}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m connectors.stripe.sandbox",
                                description="Run the Stripe v1 sandbox in the foreground.")
    p.add_argument("--customers", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default="sk_test_sandbox", help="the secret key to require ('' disables auth)")
    a = p.parse_args(argv)
    store = SandboxStore(customers=a.customers, seed=a.seed)
    app = create_app(store, a.api_key or None)
    sock = _bind(a.host, a.port)
    host = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Uvicorn(_config(app), lambda: print(json.dumps({"url": url}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
