"""Stripe connector against the sandbox on loopback: money, events, retention resync, activities, writes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.stripe.connector import StripeConnector
from connectors.stripe.money import api_exponent, from_stripe_amount, to_stripe_amount
from connectors.stripe.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import CursorExpired, Page, SkippableRecord
from state.schema import sync_runs

KEY = "sk_test_51Hconnectortests000000000000"


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxStore, SandboxServer]]:
    store = SandboxStore(customers=30)
    with SandboxServer(store, api_key=KEY) as server:
        yield store, server


def connector(server: SandboxServer, **extra: Any) -> StripeConnector:
    cfg = parse_config({"connectors": {"stripe_main": {"kind": "stripe", "base_url": server.url,
                                                       "auth": {"api_key": KEY}, **extra}}})
    conn = ConnectorFactory(cfg, sleep=lambda _s: None).build("stripe_main")
    assert isinstance(conn, StripeConnector)
    return conn


def read(conn: StripeConnector, stream: str, cursor: Any = None) -> list[Page]:
    return list(conn.read(stream, cursor))


# -- money -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "value"), [
    (1999, "usd", "19.99"), (1999, "jpy", "1999"), (1999, "JPY", "1999"), (500, "krw", "500"),
    (5120, "kwd", "5.120"), (5120, "bhd", "5.120"), (100, "isk", "1.00"), (12345, "huf", "123.45"),
    (0, "eur", "0.00"), (-250, "usd", "-2.50"), ("1999", "vnd", "1999"),
])
def test_amounts_use_the_currency_exponent(amount: Any, currency: str, value: str) -> None:
    got = from_stripe_amount(amount, currency)
    assert got == Decimal(value) and str(got) == value
    assert to_stripe_amount(got, currency) == int(amount)


@pytest.mark.parametrize("bad", [19.99, True, None, "12a"])
def test_a_fractional_or_non_numeric_amount_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="whole number"):
        from_stripe_amount(bad, "usd")


def test_an_unknown_currency_code_is_named() -> None:
    with pytest.raises(ValueError, match="'usdollar'"):
        api_exponent("usdollar")
    with pytest.raises(ValueError, match="more decimals"):
        to_stripe_amount(Decimal("1.5"), "jpy")


def test_zero_decimal_payments_and_mrr_end_to_end(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    cus = store.ids("customers")[0]
    store.pay(cus, 5000, "jpy")
    store.pay(cus, 5120, "kwd")
    sub = store.create_subscription(cus, unit_amount=120000, currency="jpy", interval="year")
    conn = connector(server)
    acts = {r.activity.details["currency"]: r.activity for p in read(conn, "charges") for r in p.records
            if r.activity is not None}
    assert acts["JPY"].details["amount"] == "5000" and acts["JPY"].subject == "Payment of 5000 JPY"
    assert acts["KWD"].details["amount"] == "5.120"
    assert acts["JPY"].refs == {"account": cus} and acts["JPY"].type == "payment"
    subs = [r for p in read(conn, "subscriptions") for r in p.records]
    assert [r.external_id for r in subs] == [sub["id"]]
    assert subs[0].data["_derived"]["mrr"] == "10000"  # 120,000 JPY a year is 10,000 a month, no decimals


# -- config, auth, version -------------------------------------------------------------------------

def test_the_documented_config_shape_works(monkeypatch: pytest.MonkeyPatch,
                                           sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_config_shape")
    cfg = parse_config({"connectors": {"stripe_main": {"kind": "stripe", "auth": {"api_key": "${STRIPE_API_KEY}"},
                                                       "webhook_secrets": ["${STRIPE_WEBHOOK_SECRET}"]}}})
    conn = ConnectorFactory(cfg).build("stripe_main")
    assert isinstance(conn, StripeConnector)
    assert conn.cfg.base_url == "https://api.stripe.com" and conn.cfg.webhook_secrets == ["whsec_config_shape"]
    assert conn.cfg.auth.api_key.get_secret_value() == KEY and KEY not in repr(conn.cfg)
    # pointed at the sandbox, every request carries the key and the pinned version
    conn = connector(server)
    read(conn, "customers")
    sent = store.requests[-1][2]
    assert sent["authorization"] == f"Bearer {KEY}" and sent["stripe-version"] == "2026-06-24.dahlia"


def test_a_rejected_key_is_an_auth_error_without_the_key(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    from hub.sdk import AuthError

    _store, server = sandbox
    wrong = "sk_test_51Hwrongkey999999999999999"
    cfg = parse_config({"connectors": {"s": {"kind": "stripe", "base_url": server.url, "auth": {"api_key": wrong}}}})
    conn = ConnectorFactory(cfg, sleep=lambda _s: None).build("s")
    with pytest.raises(AuthError) as err:
        read(conn, "customers")  # type: ignore[arg-type]
    assert "401" in str(err.value) and wrong not in str(err.value)


# -- events: walking forward, deletes, retention ---------------------------------------------------

def test_events_are_applied_oldest_first_over_many_pages(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server, page_size=7)
    pages = read(conn, "customers")
    cid = store.ids("customers")[0]
    for n in range(20):
        store.update_customer(cid, name=f"Name {n}")
    later = read(conn, "customers", pages[-1].next_cursor)
    assert len(later) == 3  # 20 events, 7 a page
    names = [r.data["name"] for p in later for r in p.records]
    assert names == [f"Name {n}" for n in range(20)]
    assert read(conn, "customers", later[-1].next_cursor) == []  # caught up: nothing again


def test_a_load_with_no_prior_events_replays_what_happened_during_it(
        sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    store.events.clear()  # an account whose events all aged out
    conn = connector(server)
    pages = read(conn, "customers")
    assert pages[-1].next_cursor is not None and pages[-1].next_cursor["event"] is None
    cid = store.ids("customers")[3]
    store.update_customer(cid, name="Changed after the load")
    got = [r for p in read(conn, "customers", pages[-1].next_cursor) for r in p.records]
    assert [(r.external_id, r.data["name"]) for r in got] == [(cid, "Changed after the load")]


def test_expired_event_cursor_raises_cursor_expired(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    pages = read(conn, "customers")
    store.expire_events(before=store.now() + 1)  # retention passes over every event, on demand
    with pytest.raises(CursorExpired, match="no longer has"):
        read(conn, "customers", pages[-1].next_cursor)


def test_a_cursor_older_than_thirty_days_is_expired_without_asking(
        sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    pages = read(conn, "customers")
    before = len(store.requests)
    conn.clock = lambda: store.now() + 30 * 86400 + 60
    with pytest.raises(CursorExpired, match="30-day event retention"):
        read(conn, "customers", pages[-1].next_cursor)
    assert len(store.requests) == before


def test_retention_expiry_is_a_recorded_full_resync(sandbox: tuple[SandboxStore, SandboxServer],
                                                    tmp_path: Path) -> None:
    store, server = sandbox
    cfg = parse_config({"database": f"sqlite:///{tmp_path / 'hub.db'}",
                        "connectors": {"stripe_main": {"kind": "stripe", "base_url": server.url,
                                                       "auth": {"api_key": KEY}}}})
    hub = Hub(cfg, sleep=lambda _s: None).ready()
    try:
        first = hub.engine.run("stripe_main.customers")[0]
        assert (first.status, first.read, first.full_resync) == ("ok", 30, False)
        cid = store.ids("customers")[0]
        store.update_customer(cid, name="Renamed while the cursor aged")
        store.expire_events(before=store.now() + 1)
        second = hub.engine.run("stripe_main.customers")[0]
        assert second.status == "ok", second.error
        assert second.full_resync and "cursor expired" in (second.resync_reason or "")
        assert second.read == 30  # read again from the lists
        with hub.db.connect() as c:
            runs = c.execute(select(sync_runs.c.full_resync, sync_runs.c.resync_reason)
                             .order_by(sync_runs.c.id)).all()
            assert [r[0] for r in runs] == [False, True]
            from state.schema import accounts
            names = {r[0] for r in c.execute(select(accounts.c.name))}
        assert "Renamed while the cursor aged" in names
    finally:
        hub.close()


# -- activities ------------------------------------------------------------------------------------

def test_subscription_lifecycle_becomes_activities(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    start = read(conn, "subscription_changes")
    cus = store.ids("customers")[1]
    sub = store.create_subscription(cus, unit_amount=2000, quantity=2)
    store.change_plan(sub["id"], unit_amount=5000)  # upgrade: 40 -> 100 a month
    store.change_plan(sub["id"], quantity=1)  # downgrade: 100 -> 50
    store.schedule_cancel(sub["id"], store.now() + 86400)
    store.cancel_subscription(sub["id"])
    acts = [r.activity for p in read(conn, "subscription_changes", start[-1].next_cursor) for r in p.records]
    assert all(a is not None for a in acts)
    changes = [(a.details["change"], a.details.get("mrr")) for a in acts if a is not None]
    assert changes == [("started", "40.00"), ("upgrade", "100.00"), ("downgrade", "50.00"),
                       ("cancel_scheduled", None), ("canceled", "0")]
    assert {a.refs["account"] for a in acts if a is not None} == {cus}
    assert acts[1] is not None and acts[1].details["mrr_delta"] == "60.00"
    # the list backfill gives the same ids for the start and the end as the events did
    listed = {r.external_id for p in read(conn, "subscription_changes") for r in p.records}
    assert {f"{sub['id']}:started", f"{sub['id']}:canceled"} <= listed


def test_failed_payments_and_refunds_become_activities(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    cus = store.ids("customers")[2]
    failed = store.pay(cus, 1999, fail=True)
    ok = store.pay(cus, 4200)
    refund = store.refund(ok["id"], 1200, reason="requested_by_customer")
    charges = {r.external_id: r.activity for p in read(conn, "charges") for r in p.records}
    act = charges[failed["id"]]
    assert act is not None and act.status == "failed" and act.details["failure_code"] == "card_declined"
    refunds = [r.activity for p in read(conn, "refunds") for r in p.records]
    assert len(refunds) == 1 and refunds[0] is not None
    assert (refunds[0].external_id, refunds[0].details["amount"], refunds[0].refs) == (
        refund["id"], "12.00", {"account": cus})


# -- webhook_pages ---------------------------------------------------------------------------------

def test_webhook_pages_route_an_event_to_its_streams(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    cus = store.ids("customers")[0]
    store.update_customer(cus, name="Via webhook")
    ev = store.public(store.events[-1])
    [(stream, page)] = conn.webhook_pages(ev)
    assert stream == "customers" and [r.data["name"] for r in page.records] == ["Via webhook"]
    assert page.records[0].updated_at is not None and page.next_cursor is None
    store.delete_customer(cus)
    [(stream, page)] = conn.webhook_pages(store.public(store.events[-1]))
    assert (stream, page.records, page.deleted) == ("customers", [], [cus])
    sub = store.create_subscription(store.ids("customers")[0])
    got = dict(conn.webhook_pages(store.public(store.events[-1])))
    assert set(got) == {"subscriptions", "subscription_changes"}
    assert got["subscriptions"].records[0].external_id == sub["id"]
    draft = {"id": "in_1draft", "object": "invoice", "customer": cus, "currency": "usd", "total": 100,
             "created": 1, "status": "draft"}
    assert dict(conn.webhook_pages({"id": "evt_3", "object": "event", "type": "invoice.deleted", "created": 2,
                                    "data": {"object": draft}}))["invoices"].deleted == ["in_1draft"]
    assert conn.webhook_pages({"id": "evt_1", "object": "event", "type": "plan.created", "created": 1,
                               "data": {"object": {"id": "price_1", "object": "plan"}}}) == []
    with pytest.raises(SkippableRecord):
        conn.webhook_pages({"id": "evt_2", "object": "event", "type": "customer.updated", "created": 1, "data": {}})
    with pytest.raises(SkippableRecord):
        conn.webhook_pages({"hello": "world"})


# -- writes ----------------------------------------------------------------------------------------

def test_writes_carry_an_idempotency_key_and_replay_once(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = sandbox
    conn = connector(server)
    cus = store.ids("customers")[0]
    events = len(store.events)
    change = {"external_id": cus, "metadata": {"crm_id": "acc_42"}, "key": "crmhub-change-42"}
    assert [r.ok for r in conn.write("customers", [change])] == [True]
    assert [r.ok for r in conn.write("customers", [change])] == [True]  # a retry: replayed
    assert len(store.events) == events + 1
    assert store.retrieve("customers", cus)["metadata"] == {"crm_id": "acc_42"}
    sent = [h for m, p, h in store.requests if m == "POST"]
    assert [h["idempotency-key"] for h in sent] == ["crmhub-change-42"] * 2
    # the same key with other parameters is refused, as a result, not an exception
    [bad] = conn.write("customers", [{**change, "metadata": {"crm_id": "other"}}])
    assert not bad.ok and "same parameters" in (bad.error or "")
    [fresh] = conn.write("customers", [{"external_id": cus, "name": "New Name Ltd"}])
    assert fresh.ok and fresh.key and len(fresh.key) == 36
    [gone] = conn.write("customers", [{"external_id": "cus_missing", "name": "x"}])
    assert not gone.ok


def test_sandbox_lists_follow_stripes_shapes(sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    _store, server = sandbox
    h = {"Authorization": f"Bearer {KEY}"}
    page = httpx.get(f"{server.url}/v1/customers", params={"limit": 3}, headers=h).json()
    assert set(page) == {"object", "url", "has_more", "data"} and page["object"] == "list"
    assert page["url"] == "/v1/customers" and page["has_more"] and len(page["data"]) == 3
    created = [c["created"] for c in page["data"]]
    assert created == sorted(created, reverse=True)
    err = httpx.get(f"{server.url}/v1/customers", params={"limit": 101}, headers=h)
    assert err.status_code == 400 and err.json()["error"]["param"] == "limit"
    err = httpx.get(f"{server.url}/v1/customers", params={"starting_after": "cus_x", "ending_before": "cus_y"},
                    headers=h)
    assert err.status_code == 400 and err.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.get(f"{server.url}/v1/customers/cus_nope", headers=h)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"
    basic = httpx.get(f"{server.url}/v1/customers", auth=(KEY, ""))
    assert basic.status_code == 200
    assert httpx.get(f"{server.url}/v1/customers").status_code == 401


def test_sandbox_control_sends_signed_webhooks_and_expires_events(
        sandbox: tuple[SandboxStore, SandboxServer]) -> None:
    from hub.webhooks.signatures import StripeVerifier

    store, server = sandbox
    got: list[tuple[bytes, str]] = []
    hook = SandboxServer(SandboxStore(), api_key=None)  # its server, serving a receiving app instead

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        got.append((await request.body(), request.headers["stripe-signature"]))
        return Response("ok")
    hook._app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    with hook:
        r = httpx.post(f"{server.url}/_sandbox/deliver", json={"url": f"{hook.url}/hook", "secret": "whsec_ctl",
                                                               "event_ids": [store.events[0]["id"]]})
        assert r.json() == {"statuses": [200]}
    [(body, signature)] = got
    StripeVerifier(["whsec_ctl"]).verify({"stripe-signature": signature}, body, "", store.clock())
    stored = len(store.events)
    assert httpx.post(f"{server.url}/_sandbox/expire-events", json={"before": store.now() + 1}).json() == {
        "dropped": stored}
    assert store.events == []
