"""Salesforce API requests per 1,000 records read and written, against the sandbox, vs the minimum.

    python bench/salesforce_requests.py                      # 20,000 contacts
    python bench/salesforce_requests.py --records 3000       # a small run

Salesforce's daily API limit is counted in requests, so requests per record is the cost that
matters. The sandbox runs as its own process (`python -m connectors.salesforce.sandbox`) and counts
what it served; the connector reads and writes it over loopback HTTP. The minimum is what the page
and batch sizes allow: a query batch holds 2,000 records (so 0.5 requests per 1,000 read), a
collection call 200 (so 5 per 1,000 written); an incremental run adds one getDeleted call.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector  # noqa: E402
from hub.sdk import ConnectorContext, Cursor  # noqa: E402

TOKEN = "bench-token"


class Sandbox:
    def __init__(self, contacts: int) -> None:
        args = [sys.executable, "-m", "connectors.salesforce.sandbox", "--contacts", str(contacts), "--accounts", "100",
                "--leads", "0", "--opportunities", "0", "--tasks", "0", "--events", "0", "--token", TOKEN,
                "--daily-limit", str(10**9)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = json.loads(self.proc.stdout.readline())["url"]
        self.admin = httpx.Client(base_url=self.url, timeout=300)

    def served(self) -> int:
        stats: dict[str, Any] = self.admin.get("/_sandbox/stats").json()
        return sum(int(v) for v in stats["requests"].values())

    def close(self) -> None:
        self.admin.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def connector(url: str) -> SalesforceConnector:
    cfg = SalesforceConfig.model_validate({"kind": "salesforce", "auth": {"access_token": TOKEN, "instance_url": url},
                                           "external_id_fields": {"Contact": "crmhub_id__c"}})
    return SalesforceConnector(cfg, ConnectorContext(name="bench"))


def row(what: str, records: int, requests: int, minimum: int) -> None:
    per = 1000 * requests / max(records, 1)
    floor = 1000 * minimum / max(records, 1)
    print(f"{what:<34} {records:>9,} {requests:>9,} {per:>10.2f} {floor:>10.2f}  {'at the minimum' if requests <= minimum else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000, help="contacts in the org, and contacts written")
    ap.add_argument("--changes", type=int, default=1_000, help="contacts changed before the incremental read")
    args = ap.parse_args()
    n = args.records
    sb = Sandbox(n)
    try:
        print(f"{'':<34} {'records':>9} {'requests':>9} {'per 1,000':>10} {'minimum':>10}")
        conn = connector(sb.url)
        before = sb.served()
        pages = list(conn.read("Contact", None))
        read = sum(len(p.records) for p in pages)
        row("read: first load", read, sb.served() - before, math.ceil(n / 2000))
        cursor: Cursor | None = pages[-1].next_cursor

        sb.admin.post("/_sandbox/modify", json={"type": "Contact", "count": args.changes})
        before = sb.served()
        later = list(conn.read("Contact", cursor))
        changed = sum(len(p.records) for p in later)
        row("read: incremental (+ deletes)", changed, sb.served() - before, math.ceil(args.changes / 2000) + 1)

        changes = [{"crmhub_id__c": f"bench-{i}", "LastName": f"Bench {i}", "Email": f"b{i}@example.com"}
                   for i in range(n)]
        before = sb.served()
        results = conn.write("Contact", changes)
        assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
        row("write: upsert (created)", len(results), sb.served() - before, math.ceil(n / 200))
        before = sb.served()
        results = conn.write("Contact", [{**c, "Title": "CTO"} for c in changes])
        row("write: upsert again (updated)", len(results), sb.served() - before, math.ceil(n / 200))
        conn.close()
    finally:
        sb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
