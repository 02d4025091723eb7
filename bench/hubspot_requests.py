"""HubSpot requests per 1,000 records, read and written, against the sandbox on loopback.

    python bench/hubspot_requests.py                  # 10,000 records per case
    python bench/hubspot_requests.py --records 2000

Goals: 10 requests per 1,000 records read at 100 a page, 10 per 1,000 written at 100 a batch.
Each case runs the HubSpot connector itself (no database) against a fresh sandbox and counts
the requests the sandbox served, so retries and probes are counted too:

- read, full: a first sync of contacts (list pages of 100, plus the probe for the newest change,
  the first incremental search and the archived list: 3 requests whatever the size);
- read, engagements full: calls with their associations (they come with the list pages);
- read, engagements incremental: changed calls by search (200 a page), plus one associations v4
  batch read per associated type (contacts, companies, deals) per page;
- write: upserts by email (half new, half existing contacts), and updates by id.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import Connector

TOKEN = "bench-token"


def connector(url: str) -> Connector:
    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "base_url": url, "auth": {"token": TOKEN},
                                              "search_lag_ms": 0, "requests_per_second": 100_000}}})
    return ConnectorFactory(cfg).build("hs")


def served(store: SandboxStore) -> int:
    return int(store.stats()["total"])


def row(case: str, records: int, requests: int, seconds: float, goal: str) -> None:
    per = requests * 1000 / max(records, 1)
    print(f"{case:<42} {records:>8,} {requests:>9,} {per:>10.1f} {seconds:>8.2f}  {goal}")


def read_case(store: SandboxStore, url: str, stream: str, cursor: Any = None) -> tuple[int, int, float, Any]:
    store.reset_stats()
    conn = connector(url)
    t0 = time.perf_counter()
    n, last = 0, None
    try:
        for page in conn.read(stream, cursor):
            n += len(page.records)
            last = page.next_cursor
    finally:
        conn.close()
    return n, served(store), time.perf_counter() - t0, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000, help="records per case (default 10,000)")
    n = ap.parse_args().records
    store = SandboxStore(contacts=n, companies=max(1, n // 10), deals=max(1, n // 5), engagements=n)
    print(f"HubSpot sandbox: {n:,} contacts and {n:,} calls; requests the sandbox served")
    print(f"{'case':<42} {'records':>8} {'requests':>9} {'per 1,000':>10} {'seconds':>8}  goal")
    with SandboxServer(store, token=TOKEN, rate_limit_max=None) as server:
        got, reqs, secs, _ = read_case(store, server.url, "contacts")
        row("read: contacts, full (100 a page)", got, reqs, secs, "10 (+3 fixed)")

        got, reqs, secs, cursor = read_case(store, server.url, "calls")
        row("read: calls + associations, full", got, reqs, secs, "10 (+3 fixed)")

        store.modify("calls", count=n)
        got, reqs, secs, _ = read_case(store, server.url, "calls", cursor)
        row("read: calls + associations, incremental", got, reqs, secs, "(search 200 + 3 v4 reads a page)")

        existing = [store.raw("contacts", i)["email"] for i in range(n // 2)]
        changes = [{"fields": {"email": e, "title": "VP Revenue"}} for e in existing]
        changes += [{"fields": {"email": f"bench{k}@example.org", "first_name": "New"}} for k in range(n - len(existing))]
        for case, batch in (("write: contact upserts by email", changes),
                            ("write: contact updates by id",
                             [{"id": str(1001 + i), "fields": {"last_name": "Bench"}} for i in range(n)])):
            store.reset_stats()
            conn = connector(server.url)
            t0 = time.perf_counter()
            try:
                results = conn.write("contacts", batch)
            finally:
                conn.close()
            secs = time.perf_counter() - t0
            failed = sum(1 for r in results if not r.ok)
            assert not failed, f"{failed} writes failed: {next(r.error for r in results if not r.ok)}"
            row(case, len(results), served(store), secs, "10")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
