"""Full Salesforce sync throughput into PostgreSQL (or SQLite), to compare with the HubSpot sync.

    python bench/salesforce_sync.py                      # 100,000 contacts, PostgreSQL
    python bench/salesforce_sync.py --contacts 20000 --db sqlite

The Salesforce sandbox (a thread of this process) holds N contacts in N/10 accounts; untimed, the
accounts are synced; timed, from the outside as a child process: `crmhub sync run sf_bench.Contact
--json` (SOQL pages of 2,000 through nextRecordsUrl, getDeleted, mapping, identity, ownership,
links, change log). Compare with `bench/sync_throughput.py` (HubSpot, 100 a page).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import fresh_database, run_cli

from connectors.salesforce.sandbox import SandboxServer, SandboxStore

TOKEN = "00DDn0000000001!AQ4AQbench.token"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    args = ap.parse_args()
    n = args.contacts
    store = SandboxStore(accounts=max(1, n // 10), contacts=n, leads=0, opportunities=0, tasks=0, events=0)
    print(f"full Salesforce sync: {n:,} contacts in {max(1, n // 10):,} accounts; database {args.db}")
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(store, token=TOKEN) as server:
        work = Path(tmp)
        url = fresh_database(args.db, work, "crmhub_bench_salesforce")
        cfg = work / "crmhub.yaml"
        cfg.write_text(json.dumps({"database": url, "connectors": {"sf_bench": {
            "kind": "salesforce", "auth": {"access_token": TOKEN, "instance_url": server.url},
            "requests_per_second": 100_000}}}))
        run_cli(["db", "upgrade"], cfg)
        run_cli(["sync", "run", "sf_bench.Account", "--json"], cfg)
        timed = run_cli(["sync", "run", "sf_bench.Contact", "--json"], cfg)
        (s,) = timed.output["streams"]
        assert s["status"] == "ok", s
        print(f"  contacts: {s['read']:,} records in {timed.seconds:.2f}s wall clock: "
              f"{s['read'] / timed.seconds:,.0f} records/s end to end ({s['read'] / s['seconds']:,.0f}/s inside "
              f"the run), peak RSS {timed.peak_rss_mb:.0f} MB, {s['requests']:,} requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
