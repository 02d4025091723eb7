"""Webhook intake under load: Stripe-signed events over loopback into `crmhub serve` on PostgreSQL.

    python bench/webhook_load.py                    # rates 1000/2000/2500/s, then 8/32/64 connections, then SIGKILL
    python bench/webhook_load.py --rates 3000 --steps "" --per-step 20000 --no-kill

The server (`python -m hub.webhooks.cli`, what `crmhub serve` runs) is its own process
on a fresh database (`crmhub_webhook_bench`); this process is the vendor. It sends
every event signed as Stripe signs it, from an asyncio HTTP/1.1 keep-alive client:
httpx's async client (`--client httpx`) was measured near 300-400 requests/s on a
whole core of this machine, under what the server takes, so it would measure itself.

- Rate steps (open loop): events are due at a fixed rate whatever the answers, on up
  to 256 connections; latency counts from when an event was due, so a slow server
  cannot hide its queue behind a slower client.
- Connection steps (closed loop): N connections, each sending its next event as soon
  as the last one is answered: the most the server takes.

Each step prints accepted events/s, p50/p99 latency of the 2xx answers, the server's
CPU and its rows per group commit. Then the inbox is checked: every acknowledged
event id is stored, and no id twice. The kill run sends more events, SIGKILLs the
server mid-load, restarts it and redelivers what was never acknowledged (as Stripe
does); every event acknowledged before the kill must be there, once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, fresh_database

from hub.webhooks.signatures import sign_stripe
from state.db import make_engine, upgrade

SECRET = "whsec_bench_0123456789abcdef"
INSTANCE = "stripe_main"
PATH = f"/webhooks/{INSTANCE}"
Event = tuple[str, bytes]


class Server:
    """`python -m hub.webhooks.cli` as a child process."""

    def __init__(self, config: Path, port: int, extra: list[str] | None = None):
        self.config, self.port, self.extra = config, port, extra or []
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "STRIPE_API_KEY": "sk_test_bench", "STRIPE_WEBHOOK_SECRET": SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.webhooks.cli", "--config", str(self.config), "--port", str(self.port),
             "--log-level", "warning", *self.extra], cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit("the webhook server did not come up")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples and the ack-time histogram buckets (by `le`) from /metrics."""
        page = httpx.get(f"{self.url}/metrics", timeout=10).text
        out = {m[0]: float(m[1]) for m in re.findall(r"^(crmhub_\w+) (\S+)$", page, re.M)}
        for le, n in re.findall(rf'^crmhub_webhook_ack_seconds_bucket{{connector="{INSTANCE}",le="([^"]+)"}} (\S+)$',
                                page, re.M):
            out[f"le={le}"] = float(n)
        return out

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def server_stack() -> str:
    """Which HTTP parser and event loop uvicorn picks here ("auto": the C ones when installed)."""
    probe = ("import importlib.util as u; print(('httptools' if u.find_spec('httptools') else 'h11') + ' + ' + "
             "('uvloop' if u.find_spec('uvloop') else 'asyncio'))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def machine_busy() -> float:
    """CPU seconds all processes on this machine spent busy (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_events(n: int, run: str) -> list[Event]:
    out = []
    for i in range(n):
        eid = f"evt_{run}_{i:09d}"
        out.append((eid, orjson.dumps({
            "id": eid, "object": "event", "api_version": "2026-06-24.dahlia", "created": int(time.time()),
            "type": "invoice.paid", "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": {"id": f"in_{i:014d}", "object": "invoice", "customer": f"cus_{i % 997:014d}",
                                "amount_paid": 2000 + i % 5000, "currency": "usd", "status": "paid"}},
        })))
    return out


class RawHttp:
    """A minimal HTTP/1.1 keep-alive connection on asyncio streams, one request at a time."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status = await self.reader.readuntil(b"\r\n")
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            self.close()
            raise ConnectionError("no complete answer") from None
        if close:
            self.close()
        return int(status.split(b" ", 2)[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Load:
    acked: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    failed: list[Event] = field(default_factory=list)
    seconds: float = 0.0
    generator_lag: float = 0.0  # open loop: how late this process itself was in sending (its own CPU)


class Vendor:
    """Sends events, signing each at send time; records answers into a `Load`."""

    def __init__(self, url: str, client: str = "raw"):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.url, self.client = host, int(port), url, client
        self.hx: httpx.AsyncClient | None = None

    async def post(self, conn: RawHttp, event: Event, load: Load, since: float) -> None:
        eid, body = event
        headers = {"Stripe-Signature": sign_stripe(SECRET, body, int(time.time())), "Content-Type": "application/json"}
        try:
            if self.client == "raw":
                status = await conn.post(PATH, body, headers)
            else:
                if self.hx is None:
                    self.hx = httpx.AsyncClient(base_url=self.url, timeout=10, limits=httpx.Limits(max_connections=256))
                status = (await self.hx.post(PATH, content=body, headers=headers)).status_code
        except (OSError, httpx.TransportError) as err:
            load.errors[type(err).__name__] = load.errors.get(type(err).__name__, 0) + 1
            load.failed.append(event)
            return
        if 200 <= status < 300:
            load.latencies.append(time.perf_counter() - since)
            load.acked.append(eid)
        else:
            load.errors[str(status)] = load.errors.get(str(status), 0) + 1
            load.failed.append(event)

    async def closed_loop(self, events: list[Event], connections: int, load: Load) -> None:
        todo = list(reversed(events))

        async def worker() -> None:
            conn = RawHttp(self.host, self.port)
            while todo:
                await self.post(conn, todo.pop(), load, time.perf_counter())
            conn.close()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        load.seconds = time.perf_counter() - t0

    async def open_loop(self, events: list[Event], rate: float, load: Load, connections: int) -> None:
        """Events fall due at `rate`/s; `connections` workers take them in order. A slow answer
        makes the queue grow, and its wait counts in the latency (measured from when due)."""
        queue: asyncio.Queue[tuple[Event, float] | None] = asyncio.Queue()

        async def worker() -> None:
            conn = RawHttp(self.host, self.port)
            while (item := await queue.get()) is not None:
                await self.post(conn, item[0], load, item[1])
            conn.close()

        workers = [asyncio.create_task(worker()) for _ in range(connections)]
        t0 = time.perf_counter()
        late = 0.0
        sent = 0
        while sent < len(events):
            now = time.perf_counter()
            due_now = min(len(events), int((now - t0) * rate) + 1)
            for i in range(sent, due_now):
                queue.put_nowait((events[i], t0 + i / rate))
            if due_now > sent:
                late = max(late, now - (t0 + (due_now - 1) / rate))
            sent = due_now
            await asyncio.sleep(0.001)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        load.seconds = time.perf_counter() - t0
        load.generator_lag = late

    async def aclose(self) -> None:
        if self.hx is not None:
            await self.hx.aclose()


def bucket_quantile(delta: dict[str, float], q: float) -> str:
    """The histogram bucket bound under which a fraction `q` of the step's server-side ack times fell."""
    buckets = sorted(((float(k[3:]), v) for k, v in delta.items() if k.startswith("le=")), key=lambda b: b[0])
    total = buckets[-1][1] if buckets else 0
    for bound, n in buckets:
        if total and n >= q * total:
            return "inf" if bound == float("inf") else f"{bound * 1000:g}"
    return "-"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def inbox_counts(db_url: str, ids: list[str]) -> tuple[int, int, int]:
    """(acked ids present, acked ids missing, event ids stored more than once)."""
    eng = make_engine(db_url)
    with eng.connect() as c:
        c.exec_driver_sql("CREATE TEMP TABLE acked (event_id text PRIMARY KEY)")
        c.exec_driver_sql("INSERT INTO acked SELECT DISTINCT unnest(%s::text[])", (ids,))
        present = c.execute(text("SELECT count(*) FROM acked a JOIN hub.webhook_inbox w "
                                 "ON w.connector = :c AND w.event_id = a.event_id"), {"c": INSTANCE}).scalar_one()
        doubled = c.execute(text("SELECT count(*) FROM (SELECT event_id FROM hub.webhook_inbox "
                                 "GROUP BY connector, event_id HAVING count(*) > 1) d")).scalar_one()
    eng.dispose()
    return int(present), len(set(ids)) - int(present), int(doubled)


def run_step(server: Server, label: str, events: list[Event], *, rate: float | None, connections: int,
             client: str) -> tuple[Load, dict[str, object]]:
    load = Load()
    cpu0, m0 = server.cpu_seconds(), server.metrics()
    own0 = time.process_time()
    busy0 = machine_busy()
    vendor = Vendor(server.url, client)

    async def go() -> None:
        try:
            if rate:
                await vendor.open_loop(events, rate, load, connections)
            else:
                await vendor.closed_loop(events, connections, load)
        finally:
            await vendor.aclose()

    asyncio.run(go())
    cpu = (server.cpu_seconds() - cpu0) / load.seconds
    own = (time.process_time() - own0) / load.seconds
    busy = (machine_busy() - busy0) / load.seconds / (psutil.cpu_count() or 1)
    m1 = server.metrics()
    d = {k: m1[k] - m0.get(k, 0.0) for k in m1}
    commits = max(1.0, d["crmhub_webhook_commits_total"])
    row = {"step": label, "events": len(events), "accepted_per_s": round(len(load.acked) / load.seconds),
           "p50_ms": round(pct(load.latencies, 50) * 1000, 1), "p99_ms": round(pct(load.latencies, 99) * 1000, 1),
           "errors": sum(load.errors.values()), "server_cpu": round(cpu, 2),
           "rows_per_commit": round(d["crmhub_webhook_committed_rows_total"] / commits, 1),
           "commit_ms": round(d["crmhub_webhook_commit_seconds_total"] / commits * 1000, 1),
           "server_p99_ms": bucket_quantile(d, 0.99),
           "generator_lag_ms": round(load.generator_lag * 1000, 1) if rate else None, "client_cpu": round(own, 2),
           "machine_busy": round(busy, 2)}
    lag = f"{load.generator_lag * 1000:.1f}" if rate else "-"
    print(f"{label:>10} {len(events):>7,} {row['accepted_per_s']:>10,} {row['p50_ms']:>7} {row['p99_ms']:>7} "
          f"{row['errors']:>6} {cpu:>7.0%} {own:>7.0%} {busy:>8.0%} {row['rows_per_commit']:>11} {row['commit_ms']:>9} "
          f"{row['server_p99_ms']:>10} {lag:>8}")
    return load, row


def kill_run(server: Server, db_url: str, args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    events = make_events(args.kill_events, "kill")
    before = Load()
    vendor = Vendor(server.url)

    async def load_then_kill() -> None:
        task = asyncio.create_task(vendor.closed_loop(events, 32, before))
        await asyncio.sleep(args.kill_after)
        server.kill()  # mid-load: the requests in flight get no answer
        await task

    asyncio.run(load_then_kill())
    server.start()
    after = Load()
    asyncio.run(Vendor(server.url).closed_loop(before.failed, 32, after))  # the vendor redelivers
    present, missing, doubled = inbox_counts(db_url, before.acked)
    _, never_stored, _ = inbox_counts(db_url, [e for e, _ in events])
    print(f"kill run: SIGKILL {args.kill_after:g}s in, after {len(before.acked):,} of {len(events):,} events were "
          f"acknowledged ({sum(before.errors.values()):,} got no answer: {before.errors})")
    print(f"  after the restart: acknowledged before the kill {present:,} stored, {missing} missing, "
          f"{doubled} stored twice; {len(after.acked):,} redelivered and acknowledged, "
          f"{len(after.failed)} refused; all {len(events):,} stored: {never_stored == 0}")
    ok = missing == 0 and doubled == 0 and never_stored == 0 and not after.failed
    return ok, {"events": len(events), "acked_before_kill": len(before.acked), "present": present,
                "missing": missing, "doubled": doubled, "redelivered": len(after.acked), "all_stored": never_stored == 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,2500", help="open-loop steps, events/s ('' for none)")
    ap.add_argument("--steps", default="8,32,64", help="closed-loop steps, connections ('' for none)")
    ap.add_argument("--per-step", type=int, default=4000, help="events per step")
    ap.add_argument("--open-connections", type=int, default=64, help="connections of the open-loop steps")
    ap.add_argument("--kill-events", type=int, default=12000)
    ap.add_argument("--kill-after", type=float, default=2.0, help="seconds into the kill run")
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw")
    ap.add_argument("--server-arg", action="append", default=[], help="passed to the server (e.g. --linger-ms=1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    steps = [int(s) for s in args.steps.split(",") if s]
    results: dict[str, object] = {}

    with tempfile.TemporaryDirectory() as tmp:
        db_url = fresh_database("postgres", Path(tmp), "crmhub_webhook_bench")
        eng = make_engine(db_url)
        upgrade(eng)
        eng.dispose()
        config = Path(tmp) / "crmhub.yaml"
        config.write_text(json.dumps({"database": db_url, "connectors": {INSTANCE: {
            "kind": "stripe", "auth": {"api_key": "${STRIPE_API_KEY}"},
            "webhook_secrets": ["${STRIPE_WEBHOOK_SECRET}"]}}}))
        server = Server(config, free_port(), args.server_arg)
        server.start()
        print(f"server: {server_stack()}; load: {args.client} client, this process")
        acked: list[str] = []
        rows = []
        print(f"{'step':>10} {'events':>7} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
              f"{'server':>7} {'client':>7} {'machine':>8} {'rows/commit':>11} {'commit ms':>9} {'srv p99 ≤':>10} {'late ms':>8}")
        try:
            plan = [(f"{r:,.0f}/s", r, args.open_connections) for r in rates]
            plan += [(f"{c} conns", None, c) for c in steps]
            for n, (label, rate, conns) in enumerate(plan):
                load, row = run_step(server, label, make_events(args.per_step, f"s{n}"), rate=rate,
                                     connections=conns, client=args.client)
                acked += load.acked
                rows.append(row)
            results["steps"] = rows
            present, missing, doubled = inbox_counts(db_url, acked)
            print(f"acknowledged {len(acked):,}: {present:,} in the inbox, {missing} missing, {doubled} stored twice")
            results["verify"] = {"acked": len(acked), "present": present, "missing": missing, "doubled": doubled}
            ok = missing == 0 and doubled == 0
            if not args.no_kill:
                kill_ok, results["kill"] = kill_run(server, db_url, args)
                ok = ok and kill_ok
        finally:
            server.stop()
    if args.json:
        print(json.dumps(results))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
