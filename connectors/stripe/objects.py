"""What the connector derives from Stripe objects: MRR, plan, periods, money, and activities.

Pure functions over Stripe's JSON (no HTTP), shared by the polled read and `webhook_pages`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from connectors.stripe.money import api_exponent, from_stripe_amount
from hub.sdk import ActivityEvent

__all__ = ["activities_for_event", "activity_for_object", "derive", "iso", "mrr"]

#: months per billing interval (Stripe's `recurring.interval`), to normalise a price to a month
_MONTHS = {"day": Decimal(12) / Decimal(365), "week": Decimal(12) / Decimal(52), "month": Decimal(1),
           "year": Decimal(12)}
_ENDED = frozenset({"canceled", "incomplete_expired"})


def iso(epoch: int | float | None) -> str | None:
    """Stripe times are Unix seconds; the SDK wants ISO-8601 UTC."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(amount: Any, currency: Any) -> str | None:
    """A Stripe amount as a decimal string (`"19.99"`), or None when either part is missing."""
    if amount is None or not currency:
        return None
    return str(from_stripe_amount(amount, str(currency)))


def _items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    items = sub.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    if isinstance(data, list) and data:
        return [i for i in data if isinstance(i, dict)]
    if isinstance(sub.get("plan"), dict):  # API versions before items: one plan and a quantity
        return [{"price": sub["plan"], "quantity": sub.get("quantity") or 1}]
    return []


def mrr(sub: dict[str, Any]) -> Decimal | None:
    """Monthly recurring revenue of a subscription, in the currency's units (0 once it ended).

    Per item: unit amount x quantity, scaled to a month by the interval (a yearly price is /12,
    weekly x52/12, daily x365/12), divided by `interval_count`. Metered prices have no unit
    amount and count 0.
    """
    currency = sub.get("currency")
    items = _items(sub)
    if not currency and items:
        currency = (items[0].get("price") or {}).get("currency")
    if not currency:
        return None
    if sub.get("status") in _ENDED:
        return Decimal(0).quantize(Decimal(1).scaleb(-api_exponent(currency)))
    total = Decimal(0)
    for item in items:
        price = item.get("price") or {}
        rec = price.get("recurring") or {"interval": price.get("interval"), "interval_count": price.get("interval_count")}
        amount = price.get("unit_amount", price.get("amount"))
        if amount is None or rec.get("interval") not in _MONTHS:
            continue
        months = _MONTHS[rec["interval"]] * Decimal(int(rec.get("interval_count") or 1))
        total += from_stripe_amount(int(amount), currency) * Decimal(int(item.get("quantity") or 1)) / months
    return total.quantize(Decimal(1).scaleb(-api_exponent(currency)), rounding=ROUND_HALF_UP)


def _plan_name(sub: dict[str, Any]) -> str | None:
    items = _items(sub)
    if not items:
        return None
    price = items[0].get("price") or {}
    name = price.get("nickname") or price.get("id")
    return f"{name} (+{len(items) - 1})" if len(items) > 1 else name


def _period(sub: dict[str, Any], key: str) -> Any:
    # 2025-03-31.basil moved current_period_* from the subscription to its items
    if sub.get(key) is not None:
        return sub[key]
    values = [int(i[key]) for i in _items(sub) if i.get(key) is not None]
    if not values:
        return None
    return min(values) if key.endswith("start") else max(values)


def derive(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with `_derived` facts the mapping reads (amounts as decimals, MRR, periods)."""
    kind = obj.get("object")
    d: dict[str, Any] = {}
    cur = obj.get("currency")
    if kind == "customer":
        d["balance"] = money(obj.get("balance"), cur)
    elif kind == "subscription":
        m = mrr(obj)
        d.update(mrr=None if m is None else str(m), plan=_plan_name(obj),
                 current_period_start=iso(_period(obj, "current_period_start")),
                 current_period_end=iso(_period(obj, "current_period_end")),
                 cancel_at=iso(obj.get("cancel_at")), canceled_at=iso(obj.get("canceled_at")),
                 currency=(cur or "").upper() or None)
        items = _items(obj)
        rec = ((items[0].get("price") or {}).get("recurring") or {}) if items else {}
        d["interval"] = rec.get("interval")
    elif kind in ("charge", "payment_intent", "refund"):
        d["amount"] = money(obj.get("amount"), cur)
    elif kind == "invoice":
        d.update(amount_due=money(obj.get("amount_due"), cur), amount_paid=money(obj.get("amount_paid"), cur),
                 total=money(obj.get("total"), cur))
    return {**obj, "_derived": d}


# ---- activities --------------------------------------------------------------------------------

def _refs(customer: Any) -> dict[str, str]:
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    return {"account": str(customer)} if customer else {}


def _dash(kind: str, oid: str, live: bool) -> str:
    return f"https://dashboard.stripe.com/{'' if live else 'test/'}{kind}/{oid}"


def activity_for_object(obj: dict[str, Any], version_at: str | None, customer: str | None = None
                        ) -> ActivityEvent | None:
    """The timeline entry for a charge, refund, payment intent or invoice (None for other objects).

    Its external id is the object's id, so each later state (a charge refunded, an invoice paid)
    is a new version of the same activity, kept by `version_at`.
    """
    kind, oid, cur = obj.get("object"), str(obj.get("id")), obj.get("currency")
    live = bool(obj.get("livemode"))
    occurred = iso(obj.get("created")) or version_at or ""
    upper = (cur or "").upper()
    if kind == "charge":
        amount = money(obj.get("amount"), cur)
        failed = obj.get("status") == "failed"
        refunded = bool(obj.get("refunded"))
        status = "failed" if failed else "refunded" if refunded else str(obj.get("status") or "")
        return ActivityEvent(
            type="payment", external_id=oid, occurred_at=occurred, updated_at=version_at, status=status,
            subject=f"{'Failed payment' if failed else 'Payment'} of {amount} {upper}", url=_dash("payments", oid, live),
            refs=_refs(obj.get("customer") or customer),
            details={"amount": amount, "currency": upper, "amount_minor": obj.get("amount"),
                     "amount_refunded": money(obj.get("amount_refunded"), cur),
                     "failure_code": obj.get("failure_code"), "failure_message": obj.get("failure_message"),
                     "payment_intent": obj.get("payment_intent"), "outcome": (obj.get("outcome") or {}).get("type")})
    if kind == "refund":
        amount = money(obj.get("amount"), cur)
        charge = obj.get("charge")
        return ActivityEvent(
            type="refund", external_id=oid, occurred_at=occurred, updated_at=version_at,
            status=str(obj.get("status") or ""), subject=f"Refund of {amount} {upper}",
            url=_dash("payments", str(obj.get("payment_intent") or charge), live),
            refs=_refs(customer or (charge.get("customer") if isinstance(charge, dict) else None)),
            details={"amount": amount, "currency": upper, "amount_minor": obj.get("amount"),
                     "charge": charge.get("id") if isinstance(charge, dict) else charge, "reason": obj.get("reason")})
    if kind == "payment_intent":
        amount = money(obj.get("amount"), cur)
        err = obj.get("last_payment_error") or {}
        return ActivityEvent(
            type="payment_intent", external_id=oid, occurred_at=occurred, updated_at=version_at,
            status=str(obj.get("status") or ""), subject=f"Payment intent for {amount} {upper}",
            url=_dash("payments", oid, live), refs=_refs(obj.get("customer") or customer),
            details={"amount": amount, "currency": upper, "amount_minor": obj.get("amount"),
                     "amount_received": money(obj.get("amount_received"), cur),
                     "error_code": err.get("code"), "latest_charge": obj.get("latest_charge")})
    if kind == "invoice":
        total = money(obj.get("total"), cur)
        return ActivityEvent(
            type="invoice", external_id=oid, occurred_at=occurred, updated_at=version_at,
            status=str(obj.get("status") or ""), subject=f"Invoice {obj.get('number') or oid} for {total} {upper}",
            url=obj.get("hosted_invoice_url") or _dash("invoices", oid, live), refs=_refs(obj.get("customer")),
            details={"total": total, "currency": upper, "amount_due": money(obj.get("amount_due"), cur),
                     "amount_paid": money(obj.get("amount_paid"), cur), "number": obj.get("number")})
    return None


def _sub_activity(sub: dict[str, Any], change: str, external_id: str, occurred: str, version_at: str | None,
                  details: dict[str, Any]) -> ActivityEvent:
    sid = str(sub.get("id"))
    plan = _plan_name(sub)
    words = {"started": "Subscription started", "upgrade": "Subscription upgraded",
             "downgrade": "Subscription downgraded", "cancel_scheduled": "Subscription set to cancel",
             "canceled": "Subscription cancelled"}
    return ActivityEvent(
        type="subscription_change", external_id=external_id, occurred_at=occurred, updated_at=version_at,
        status="cancelled" if change == "canceled" else str(sub.get("status") or ""),
        subject=f"{words[change]}: {plan}" if plan else words[change],
        url=_dash("subscriptions", sid, bool(sub.get("livemode"))), refs=_refs(sub.get("customer")),
        details={"change": change, "subscription": sid, "plan": plan,
                 "currency": (sub.get("currency") or "").upper() or None, **details})


def subscription_backfill(sub: dict[str, Any], version_at: str | None) -> list[ActivityEvent]:
    """From a listed subscription: its start, and its end if it ended (the same ids events give)."""
    sid = str(sub.get("id"))
    m = mrr({**sub, "status": "active"})
    out = [_sub_activity(sub, "started", f"{sid}:started", iso(sub.get("start_date") or sub.get("created")) or "",
                         version_at, {"mrr": None if m is None else str(m)})]
    if sub.get("status") in _ENDED:
        out.append(_sub_activity(sub, "canceled", f"{sid}:canceled",
                                 iso(sub.get("ended_at") or sub.get("canceled_at")) or version_at or "",
                                 version_at, {"mrr_before": None if m is None else str(m), "mrr": "0"}))
    return out


def activities_for_event(event: dict[str, Any]) -> list[ActivityEvent]:
    """Subscription starts, upgrades, downgrades, scheduled and actual cancellations."""
    etype = str(event.get("type") or "")
    data = event.get("data") or {}
    sub = data.get("object") or {}
    if not etype.startswith("customer.subscription.") or sub.get("object") != "subscription":
        return []
    at = iso(event.get("created")) or ""
    sid = str(sub.get("id"))
    if etype == "customer.subscription.created":
        m = mrr({**sub, "status": "active"})
        return [_sub_activity(sub, "started", f"{sid}:started", iso(sub.get("start_date")) or at, at,
                              {"mrr": None if m is None else str(m)})]
    if etype == "customer.subscription.deleted":
        before = mrr({**sub, "status": "active"})
        return [_sub_activity(sub, "canceled", f"{sid}:canceled", iso(sub.get("ended_at")) or at, at,
                              {"mrr_before": None if before is None else str(before), "mrr": "0"})]
    if etype != "customer.subscription.updated":
        return []
    prev = data.get("previous_attributes") or {}
    out: list[ActivityEvent] = []
    if {"items", "plan", "quantity"} & set(prev):
        old = {**sub, **{k: prev[k] for k in ("items", "plan", "quantity") if k in prev}}
        before, after = mrr(old), mrr(sub)
        if before is not None and after is not None and before != after:
            out.append(_sub_activity(sub, "upgrade" if after > before else "downgrade", str(event.get("id")), at, at,
                                     {"mrr_before": str(before), "mrr": str(after), "mrr_delta": str(after - before)}))
    if "cancel_at" in prev and sub.get("cancel_at") and not prev.get("cancel_at"):
        out.append(_sub_activity(sub, "cancel_scheduled", str(event.get("id")) + ":cancel_at", at, at,
                                 {"cancel_at": iso(sub.get("cancel_at"))}))
    if prev.get("status") and sub.get("status") in _ENDED:
        before = mrr({**sub, "status": "active"})
        out.append(_sub_activity(sub, "canceled", f"{sid}:canceled", at, at,
                                 {"mrr_before": None if before is None else str(before), "mrr": "0"}))
    return out
