"""Inbox processing throughput: Stripe events in `hub.webhook_inbox` -> the canonical store.

    python bench/inbox_processing.py --records 2000              # small: a quick look
    python bench/inbox_processing.py --records 100000 --workers 2
    python bench/inbox_processing.py --records 60000 --feed-rate 2000 --workers 2   # depth under intake

Events are made by the Stripe sandbox's store in this process (Stripe's documented shapes:
customers created and renamed, subscriptions started and upgraded, payments with their
intents), so no HTTP is involved: what is measured is claim + webhook_pages + mapping + merge
+ write + mark done, one transaction per claimed batch. Workers are processes (`--workers`),
each running `InboxProcessor.run` on its own connection, as `crmhub serve` workers or separate
`crmhub` processes would on PostgreSQL.

Two modes:
- drain (default): the inbox is filled first, then the workers empty it; prints events/s.
- `--feed-rate R`: the events are inserted at R a second (in 100 ms slices, as the intake's
  group commits would) while the workers run; prints the inbox depth every second and its
  maximum, which stays bounded when processing keeps up with R.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import fresh_database

from connectors.stripe.sandbox import SandboxStore
from hub.webhooks import inbox
from hub.webhooks.inbox import InboxRow
from state.db import make_engine, upgrade
from state.schema import webhook_inbox

INSTANCE = "stripe_main"


def make_events(n: int, customers: int, seed: int) -> list[dict[str, Any]]:
    """About `n` events: customers created, then a mix of renames, subscription changes and payments."""
    t = [time.time() - 3 * 86400]  # inside the retention, a second per change

    def clock() -> float:
        t[0] += 1
        return t[0]

    store = SandboxStore(customers=0, seed=seed, clock=clock)
    ids = [store.create_customer(name=f"Bench Customer {i}", email=f"b{i}@bench{i}.example")["id"]
           for i in range(min(customers, n))]
    subs: dict[str, str] = {}
    k = 0
    while len(store.events) < n:
        cid = ids[k % len(ids)]
        k += 1
        r = k % 10
        if r < 6:
            store.update_customer(cid, name=f"Bench Customer {k}")
        elif r < 8:
            if cid in subs:
                store.change_plan(subs[cid], unit_amount=1000 + (k % 7) * 500)
            else:
                subs[cid] = store.create_subscription(cid, unit_amount=2000)["id"]
        else:
            store.pay(cid, 1000 + k % 5000, fail=(k % 17 == 0))  # three events
    return [SandboxStore.public(e) for e in store.events[:n]]


def config(db_url: str) -> dict[str, Any]:
    return {"database": db_url, "connectors": {INSTANCE: {
        "kind": "stripe", "base_url": "http://127.0.0.1:9",  # never called: these events need no look-up
        "auth": {"api_key": "sk_test_bench"}, "webhook_secrets": ["whsec_bench"]}}}


def insert(db_url: str, events: list[dict[str, Any]]) -> None:
    eng = make_engine(db_url)
    now = datetime.now(UTC)
    with eng.begin() as c:
        for i in range(0, len(events), 1000):
            inbox.insert_events(c, [InboxRow(INSTANCE, e["id"], now, orjson.dumps(e).decode())
                                    for e in events[i:i + 1000]])
    eng.dispose()


def worker(db_url: str, batch: int, stop: Any, done: Any, ready: Any, go: Any) -> None:
    from hub.app import Hub
    from hub.config import parse_config
    from hub.webhooks.processor import InboxProcessor, ProcessorSettings

    hub = Hub(parse_config(config(db_url))).ready()
    proc = InboxProcessor(hub.db, hub.factory, hub.engine, settings=ProcessorSettings(batch_size=batch,
                                                                                     idle_sleep=0.05))
    with ready.get_lock():
        ready.value += 1
    go.wait()  # start-up (imports, connectors, mappings) is not processing time
    while not stop.is_set():
        res = proc.process_batch()
        with done.get_lock():
            done.value += res.done
        if res.claimed == 0:
            time.sleep(0.05)
    proc.close()
    hub.close()


def depth(db_url: str) -> int:
    eng = make_engine(db_url)
    with eng.connect() as c:
        n = int(c.execute(select(func.count()).select_from(webhook_inbox)
                          .where(webhook_inbox.c.status.in_(("pending", "failed")))).scalar_one())
    eng.dispose()
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=20_000, help="events")
    ap.add_argument("--customers", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=2, help="processes")
    ap.add_argument("--batch", type=int, default=500, help="rows a worker claims per transaction")
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--feed-rate", type=float, default=0.0, help="events/s inserted while processing (0: drain)")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args(argv)
    if a.db == "sqlite" and a.workers > 1:
        ap.error("SQLite has one writer: use --workers 1")

    t0 = time.perf_counter()
    events = make_events(a.records, a.customers, a.seed)
    made = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        db_url = fresh_database(a.db, Path(tmp), "crmhub_inbox_bench")
        eng = make_engine(db_url)
        upgrade(eng)
        eng.dispose()
        ctx = mp.get_context("spawn")
        stop, done, ready, go = ctx.Event(), ctx.Value("q", 0), ctx.Value("i", 0), ctx.Event()
        if not a.feed_rate:
            insert(db_url, events)
        procs = [ctx.Process(target=worker, args=(db_url, a.batch, stop, done, ready, go)) for _ in range(a.workers)]
        for p in procs:
            p.start()
        while ready.value < a.workers:
            time.sleep(0.05)
        go.set()
        started = time.perf_counter()
        depths: list[tuple[float, int]] = []
        fed = 0 if a.feed_rate else len(events)
        next_sample = started + 1.0
        while True:
            now = time.perf_counter()
            if fed < len(events):
                due = min(len(events), int((now - started) * a.feed_rate))
                if due > fed:
                    insert(db_url, events[fed:due])
                    fed = due
            if now >= next_sample:
                depths.append((round(now - started, 1), depth(db_url)))
                next_sample += 1.0
            if fed >= len(events) and done.value >= len(events):
                break
            time.sleep(0.1 if a.feed_rate else 0.05)
        seconds = time.perf_counter() - started
        stop.set()
        for p in procs:
            p.join(60)
        left = depth(db_url)
    out = {
        "db": a.db, "events": len(events), "workers": a.workers, "batch": a.batch,
        "feed_rate": a.feed_rate or None, "seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds, 1), "left_unprocessed": left,
        "max_depth": max((d for _t, d in depths), default=0), "depth_per_s": depths[-30:],
        "event_generation_seconds": round(made, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
