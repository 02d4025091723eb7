"""Inbox processing (hub.webhooks.processor) with the Stripe connector and its sandbox.

Events come from the sandbox (Stripe's side): either inserted into the inbox as the intake stores
them, or sent signed over HTTP to `crmhub serve`'s app on loopback. The canonical store is read
back through a separate engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import uvicorn
from sqlalchemy import func, select

from connectors.stripe.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.config import parse_config
from hub.webhooks import inbox
from hub.webhooks.inbox import InboxRow
from hub.webhooks.processor import BatchResult, InboxProcessor, ProcessorSettings
from hub.webhooks.server import WebhookSettings, create_app
from state.schema import (
    accounts,
    activities,
    change_log,
    external_links,
    opportunities,
    retry_queue,
    webhook_inbox,
)

KEY = "sk_test_51Hinboxprocessing0000000000"
SECRET = "whsec_inbox_processing_secret"
BASE = 1_790_000_000


class Clock:
    """The sandbox's clock, moved by hand: events a second apart, or in the same second."""

    def __init__(self, t: int = BASE) -> None:
        self.t = t

    def __call__(self) -> float:
        return float(self.t)

    def tick(self, s: int = 1) -> None:
        self.t += s


@pytest.fixture
def stripe() -> Iterator[tuple[SandboxStore, SandboxServer, Clock]]:
    clock = Clock(int(time.time()) - 60)  # near real time: webhook signatures are checked against it
    store = SandboxStore(customers=5, clock=clock)
    with SandboxServer(store, api_key=KEY) as server:
        yield store, server, clock


def make_hub(db_url: str, server: SandboxServer, ownership: dict[str, Any] | None = None) -> Hub:
    cfg = parse_config({"database": db_url, "sync": {"retry_backoff_seconds": 0}, "ownership": ownership or {},
                        "connectors": {"stripe_main": {"kind": "stripe", "base_url": server.url,
                                                       "auth": {"api_key": KEY}, "webhook_secrets": [SECRET]}}})
    return Hub(cfg, sleep=lambda _s: None).ready()


def processor(hub: Hub, **settings: Any) -> InboxProcessor:
    s = ProcessorSettings(**{"backoff": timedelta(0), **settings})
    return InboxProcessor(hub.db, hub.factory, hub.engine, settings=s)


def store_events(hub: Hub, events: list[dict[str, Any]]) -> None:
    """As the intake stores them (one row per event id; a redelivery is skipped)."""
    now = datetime.now(UTC)
    with hub.db.begin() as c:
        inbox.insert_events(c, [InboxRow("stripe_main", e["id"], now, orjson.dumps(SandboxStore.public(e)).decode())
                                for e in events])


def drain(proc: InboxProcessor) -> list[BatchResult]:
    out: list[BatchResult] = []
    while True:
        res = proc.process_batch()
        if not res.claimed:
            return out
        out.append(res)


def account_names(hub: Hub) -> dict[str, str]:
    """Stripe customer id -> the canonical account's name."""
    with hub.db.connect() as c:
        q = (select(external_links.c.external_id, accounts.c.name)
             .join(accounts, accounts.c.id == external_links.c.entity_id)
             .where(external_links.c.connector == "stripe_main", external_links.c.entity == "account"))
        return {e: n for e, n in c.execute(q)}


def count(hub: Hub, table: Any, *where: Any) -> int:
    with hub.db.connect() as c:
        return int(c.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# -- the basics --------------------------------------------------------------------------------------

def test_events_become_canonical_records_in_one_transaction(db_url: str, stripe: Any) -> None:
    store, server, _clock = stripe
    hub = make_hub(db_url, server)
    try:
        cus = store.ids("customers")[0]
        sub = store.create_subscription(cus, unit_amount=4900, quantity=2)
        store.pay(cus, 9800)
        store_events(hub, store.events)
        results = drain(processor(hub))
        assert sum(r.claimed for r in results) == sum(r.done for r in results) == len(store.events)
        assert set(account_names(hub)) == set(store.ids("customers"))
        with hub.db.connect() as c:
            opp = c.execute(select(opportunities)).mappings().one()
            acct = c.execute(select(external_links.c.entity_id).where(
                external_links.c.external_id == cus, external_links.c.entity == "account")).scalar_one()
            pays = c.execute(select(activities.c.type, activities.c.external_id, activities.c.account_id)
                             .where(activities.c.type == "payment")).all()
        assert (opp["stage"], str(opp["amount"]), opp["account_id"]) == ("active", "98.0000", acct)
        assert opp["custom"]["stripe_mrr"] == "98.00"
        assert [(t, a) for t, _e, a in pays] == [("payment", acct)]
        assert count(hub, webhook_inbox, webhook_inbox.c.status != "done") == 0
        assert sub["id"] in {r[0] for r in _links(hub, "opportunity")}
    finally:
        hub.close()


def _links(hub: Hub, entity: str) -> list[Any]:
    with hub.db.connect() as c:
        return list(c.execute(select(external_links.c.external_id).where(external_links.c.entity == entity)).all())


# -- order and duplicates ------------------------------------------------------------------------------

def test_out_of_order_events_never_roll_an_entity_back(db_url: str, stripe: Any) -> None:
    store, server, clock = stripe
    hub = make_hub(db_url, server)
    try:
        store_events(hub, store.events)
        drain(processor(hub))
        cid = store.ids("customers")[0]
        clock.tick()
        store.update_customer(cid, name="First rename")
        older = store.events[-1]
        clock.tick()
        store.update_customer(cid, name="Second rename")
        newer = store.events[-1]
        logged = count(hub, change_log)
        store_events(hub, [newer])  # the newer event is delivered first ...
        drain(processor(hub))
        assert account_names(hub)[cid] == "Second rename"
        store_events(hub, [older])  # ... the older one later
        [res] = drain(processor(hub))
        assert (res.done, res.stale, res.records) == (1, 1, 0)
        assert account_names(hub)[cid] == "Second rename"
        assert count(hub, change_log) == logged + 1  # the newer rename only; nothing for the stale one
        # both in one batch, the older one last: the newest version still wins
        clock.tick()
        store.update_customer(cid, name="Third rename")
        third = store.events[-1]
        clock.tick()
        store.update_customer(cid, name="Fourth rename")
        store_events(hub, [store.events[-1]])
        store_events(hub, [third])
        drain(processor(hub))
        assert account_names(hub)[cid] == "Fourth rename"
    finally:
        hub.close()


@pytest.mark.parametrize("rule", [{"rule": "most_recent"}, {"rule": "owner", "system": "stripe_main"},
                                  {"rule": "fill_empty"}], ids=["most_recent", "owner", "fill_empty"])
def test_a_late_event_cannot_slip_under_a_newer_one_that_changed_nothing(db_url: str, stripe: Any,
                                                                          rule: dict[str, Any]) -> None:
    """A (applied) -> B (late) -> A again (applied, a no-op): B must still count as older, whatever
    the ownership rule (some leave the provenance of an unchanged field as it was)."""
    store, server, clock = stripe
    hub = make_hub(db_url, server, {"account.*": rule})
    try:
        store_events(hub, store.events)
        drain(processor(hub))
        cid = store.ids("customers")[0]
        original = store.retrieve("customers", cid)["name"]
        clock.tick()
        store.update_customer(cid, name="Briefly renamed")
        late = store.events[-1]
        clock.tick()
        store.update_customer(cid, name=original)
        store_events(hub, [store.events[-1]])
        assert drain(processor(hub))[0].records == 1
        store_events(hub, [late])
        assert drain(processor(hub))[0].stale == 1
        assert account_names(hub)[cid] == original
        with hub.db.connect() as c:
            prov = c.execute(select(accounts.c.provenance).join(
                external_links, external_links.c.entity_id == accounts.c.id).where(
                external_links.c.external_id == cid)).scalar_one()
        assert prov["_seen"]["stripe_main"] == [cid, _iso(store.events[-1]["created"])]
    finally:
        hub.close()


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_update_after_a_delete_does_not_revive_the_record(db_url: str, stripe: Any) -> None:
    store, server, clock = stripe
    hub = make_hub(db_url, server)
    try:
        store_events(hub, store.events)
        drain(processor(hub))
        cid = store.ids("customers")[1]
        clock.tick()
        store.update_customer(cid, name="Renamed before the delete")
        update = store.events[-1]
        clock.tick()
        store.delete_customer(cid)
        store_events(hub, [store.events[-1]])
        drain(processor(hub))
        store_events(hub, [update])
        [res] = drain(processor(hub))
        assert res.stale == 1
        with hub.db.connect() as c:
            row = c.execute(select(accounts.c.name, accounts.c.archived_at).join(
                external_links, external_links.c.entity_id == accounts.c.id).where(
                external_links.c.external_id == cid)).one()
        assert row.archived_at is not None and row.name != "Renamed before the delete"
    finally:
        hub.close()


def test_a_webhook_for_an_event_polling_applied_is_a_no_op(db_url: str, stripe: Any) -> None:
    """Catch-up: the Events API poll fills what missed webhooks left; a late webhook changes nothing."""
    store, server, clock = stripe
    hub = make_hub(db_url, server)
    try:
        assert hub.engine.run("stripe_main.customers")[0].status == "ok"
        cid = store.ids("customers")[2]
        clock.tick()
        store.update_customer(cid, name="Changed while webhooks were down")
        missed = store.events[-1]
        polled = hub.engine.run("stripe_main.customers")[0]  # no webhook came: the poll catches up
        assert (polled.status, polled.read) == ("ok", 1)
        assert account_names(hub)[cid] == "Changed while webhooks were down"
        logged, links = count(hub, change_log), count(hub, external_links)
        store_events(hub, [missed])  # the webhook arrives after all
        [res] = drain(processor(hub))
        assert res.done == 1
        assert (count(hub, change_log), count(hub, external_links)) == (logged, links)
        assert account_names(hub)[cid] == "Changed while webhooks were down"
    finally:
        hub.close()


def test_a_poll_after_the_webhooks_applied_its_events_changes_nothing(db_url: str, stripe: Any) -> None:
    store, server, clock = stripe
    hub = make_hub(db_url, server)
    try:
        assert hub.engine.run("stripe_main.customers")[0].status == "ok"
        cid = store.ids("customers")[1]
        clock.tick()
        store.update_customer(cid, name="Told by webhook")
        clock.tick()
        store.update_customer(cid, email="billing@told.example")
        store_events(hub, store.events[-2:])
        drain(processor(hub))
        assert account_names(hub)[cid] == "Told by webhook"
        logged = count(hub, change_log)
        polled = hub.engine.run("stripe_main.customers")[0]  # the same two events, from the Events API
        assert (polled.status, polled.read, polled.written) == ("ok", 2, 0)
        assert count(hub, change_log) == logged
    finally:
        hub.close()


def test_duplicate_deliveries_are_stored_and_applied_once(pg_only_url: str, stripe: Any) -> None:
    store, server, _clock = stripe
    hub = make_hub(pg_only_url, server)
    try:
        with serving(hub, workers=0) as base:
            statuses = store.deliver(f"{base}/webhooks/stripe_main", SECRET, duplicate=True, shuffle=True)
        assert statuses == [200] * (2 * len(store.events))
        assert count(hub, webhook_inbox) == len(store.events)
        drain(processor(hub))
        assert set(account_names(hub)) == set(store.ids("customers"))
        assert count(hub, change_log, change_log.c.op == "create") == len(store.ids("customers"))
    finally:
        hub.close()


# -- failures ------------------------------------------------------------------------------------------

def test_an_unusable_event_is_retried_then_dead_lettered(db_url: str, stripe: Any) -> None:
    store, server, clock = stripe
    hub = make_hub(db_url, server)
    try:
        bad = {"id": "evt_bad000000000000000000001", "object": "event", "type": "customer.updated",
               "created": int(clock()), "data": {}}
        store_events(hub, [bad, *store.events])
        proc = processor(hub, max_attempts=2)
        first = proc.process_batch()
        assert (first.claimed, first.done, first.failed) == (len(store.events) + 1, len(store.events), 1)
        assert set(account_names(hub)) == set(store.ids("customers"))  # the rest went on
        second = proc.process_batch()
        assert (second.claimed, second.failed) == (1, 1)
        with hub.db.connect() as c:
            row = c.execute(select(webhook_inbox).where(webhook_inbox.c.event_id == bad["id"])).mappings().one()
        assert row["status"] == "dead" and row["attempts"] == 2 and "SkippableRecord" in row["last_error"]
        assert proc.process_batch().claimed == 0
        with hub.db.begin() as c:
            assert inbox.requeue(c, connector="stripe_main") == 1  # an operator's replay
    finally:
        hub.close()


def test_a_record_the_mapping_rejects_goes_to_the_retry_queue(db_url: str, stripe: Any) -> None:
    store, server, _clock = stripe
    hub = make_hub(db_url, server)
    try:
        cid = store.ids("customers")[3]
        store.update_customer(cid, email="not-an-email")
        store_events(hub, store.events)
        drain(processor(hub))
        with hub.db.connect() as c:
            queued = c.execute(select(retry_queue)).mappings().all()
        assert [(q["external_id"], q["stream"]) for q in queued] == [(cid, "customers")]
        assert "mapping failed" in queued[0]["reason"]
        assert count(hub, webhook_inbox, webhook_inbox.c.status == "done") == len(store.events)
    finally:
        hub.close()


def test_a_stream_without_a_mapping_fails_its_rows_not_the_batch(db_url: str, stripe: Any, tmp_path: Any) -> None:
    """A user's mapping that leaves out `subscriptions`: those events fail (and are retried once the
    mapping is fixed); the customers' go through."""
    store, server, _clock = stripe
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "stripe.yaml").write_text(
        "kind: stripe\nstreams:\n  customers:\n    target: account\n    fields:\n      name: name\n")
    cfg = parse_config({"database": db_url, "mappings_dir": str(tmp_path / "mappings"),
                        "connectors": {"stripe_main": {"kind": "stripe", "base_url": server.url,
                                                       "auth": {"api_key": KEY}}}},
                       path=str(tmp_path / "crmhub.yaml"))
    hub = Hub(cfg, sleep=lambda _s: None).ready()
    try:
        store.create_subscription(store.ids("customers")[0])
        store_events(hub, store.events)
        res = processor(hub).process_batch()
        assert (res.done, res.failed) == (len(store.events) - 1, 1)
        assert set(account_names(hub)) == set(store.ids("customers"))
        with hub.db.connect() as c:
            err = c.execute(select(webhook_inbox.c.last_error).where(webhook_inbox.c.status == "failed")).scalar_one()
        assert "subscriptions" in err
    finally:
        hub.close()


def test_a_failing_batch_is_split_so_only_the_bad_event_fails(db_url: str, stripe: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store, server, _clock = stripe
    hub = make_hub(db_url, server)
    try:
        poison = store.ids("customers")[4]
        proc = processor(hub, max_attempts=3)
        real = proc._write_stream

        def fragile(tx: Any, writer: Any, pages: list[Any], now: Any, res: Any) -> None:
            if any(r.external_id == poison for p in pages for r in p.records):
                raise RuntimeError("the database refused this record")
            real(tx, writer, pages, now, res)
        monkeypatch.setattr(proc, "_write_stream", fragile)
        store_events(hub, store.events)
        res = proc.process_batch()
        assert res.split and (res.done, res.failed) == (len(store.events) - 1, 1)
        assert set(account_names(hub)) == set(store.ids("customers")) - {poison}
    finally:
        hub.close()


# -- end to end: serve on loopback, the sandbox sends signed events ------------------------------------

@contextmanager
def serving(hub: Hub, workers: int) -> Iterator[str]:
    app = create_app(hub.cfg, hub.db, WebhookSettings(process_workers=workers,
                                                      processor=ProcessorSettings(idle_sleep=0.02)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           ws="none", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_serve_stores_and_processes_signed_events_on_postgres(pg_only_url: str, stripe: Any) -> None:
    store, server, clock = stripe
    hub = make_hub(pg_only_url, server)
    try:
        cus = store.ids("customers")[0]
        sub = store.create_subscription(cus, unit_amount=3000)
        clock.tick()
        store.change_plan(sub["id"], unit_amount=9000)
        charge = store.pay(cus, 9000)
        store.refund(charge["id"], 1000)
        store.pay(cus, 700, "jpy", fail=True)
        with serving(hub, workers=2) as base:
            assert set(store.deliver(f"{base}/webhooks/stripe_main", SECRET, shuffle=True)) == {200}
            wait_for(lambda: count(hub, webhook_inbox, webhook_inbox.c.status == "done") == len(store.events))
            import httpx

            metrics = httpx.get(f"{base}/metrics").text
        assert f'crmhub_webhook_processed_total{{connector="stripe_main"}} {len(store.events)}' in metrics
        assert set(account_names(hub)) == set(store.ids("customers"))
        with hub.db.connect() as c:
            opp = c.execute(select(opportunities.c.amount, opportunities.c.stage)).one()
            kinds = sorted(r[0] for r in c.execute(select(activities.c.type)))
        assert (str(opp.amount), opp.stage) == ("90.0000", "active")  # the upgrade, whatever the order
        assert kinds.count("payment") == 2 and "refund" in kinds and "subscription_change" in kinds
    finally:
        hub.close()


def test_concurrent_workers_share_records_without_conflicts_on_postgres(pg_only_url: str, stripe: Any) -> None:
    """Four workers, small batches, events of the same new customers spread over many batches: no
    unique violation, no deadlock, no failed row; one account per customer with its newest name."""
    store, server, clock = stripe
    hub = make_hub(pg_only_url, server)
    try:
        fresh = [store.create_customer(name=f"New {i}", email=f"n{i}@new{i}.example")["id"] for i in range(40)]
        for round_ in range(5):
            clock.tick()
            for i, cid in enumerate(fresh):
                store.update_customer(cid, name=f"New {i} v{round_}")
                if round_ == 0:
                    store.create_subscription(cid, unit_amount=1000 + i)
        store_events(hub, store.events)
        procs = [processor(hub, batch_size=7) for _ in range(4)]
        errors: list[BaseException] = []

        def work(p: InboxProcessor) -> None:
            try:
                drain(p)
            except BaseException as err:  # surfaced below
                errors.append(err)
        threads = [threading.Thread(target=work, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        with hub.db.connect() as c:
            statuses: dict[str, int] = {s: n for s, n in c.execute(
                select(webhook_inbox.c.status, func.count()).group_by(webhook_inbox.c.status))}
        assert statuses == {"done": len(store.events)}
        assert sum(sum(p.stats.failed.values()) for p in procs) == 0, "a row failed (a conflict, then a retry)"
        names = account_names(hub)
        assert {names[cid] for cid in fresh} == {f"New {i} v4" for i in range(len(fresh))}
        assert count(hub, accounts) == len(store.ids("customers"))
        assert count(hub, opportunities) == len(fresh)
    finally:
        hub.close()


def test_events_of_a_kind_that_cannot_read_them_are_kept_not_dropped(db_url: str) -> None:
    """HubSpot's connector has no webhook_pages yet: its inbox rows fail (kept, dead after the attempts,
    replayable), rather than being marked done with nothing written."""
    cfg = parse_config({"database": db_url, "connectors": {
        "hubspot_main": {"kind": "hubspot", "auth": {"token": "pat-na1-test"}, "webhook_secrets": ["s"]}}})
    hub = Hub(cfg, sleep=lambda _s: None).ready()
    try:
        with hub.db.begin() as c:
            inbox.insert_events(c, [InboxRow("hubspot_main", "1", datetime.now(UTC),
                                             '{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 7}')])
        res = processor(hub, max_attempts=1).process_batch()
        assert (res.claimed, res.done, res.failed) == (1, 0, 1)
        with hub.db.connect() as c:
            row = c.execute(select(webhook_inbox.c.status, webhook_inbox.c.last_error)).one()
        assert row.status == "dead" and "does not process webhook events yet" in row.last_error
    finally:
        hub.close()
