"""Full HubSpot sync throughput and memory, into SQLite and PostgreSQL.

    python bench/sync_throughput.py                       # 100,000 contacts, both databases
    python bench/sync_throughput.py --contacts 1000000 --db postgres

Each run: a HubSpot sandbox in its own process, a fresh database, then
`crmhub sync run <instance>.contacts --json` as a child process, measured from the
outside (wall clock of the whole command, its peak RSS, the requests the sandbox
served). Then 100 contacts change and an incremental sync is measured the same way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Sandbox, fresh_database, run_cli, write_config


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--db", action="append", choices=["sqlite", "postgres"])
    ap.add_argument("--changes", type=int, default=100)
    args = ap.parse_args()
    dbs = args.db or ["sqlite", "postgres"]
    n = args.contacts
    print(f"full sync of {n:,} HubSpot sandbox contacts (100 a page), then {args.changes} changed")
    print(f"{'database':<10} {'records/s':>10} {'seconds':>8} {'peak RSS':>9} {'requests':>9} "
          f"{'| incr. s':>9} {'work s':>7} {'reqs':>5} {'read':>5}")
    # the sandbox advertises no rate limit here: HubSpot's own (190 per 10 s) caps a real sync near 1,900 records/s
    with tempfile.TemporaryDirectory() as tmp, Sandbox(n, companies=max(1, n // 10), deals=0, rate_limit_max=10**9) as sb:
        work = Path(tmp)
        for db in dbs:
            url = fresh_database(db, work)
            cfg = write_config(work, url, sb.url, ["contacts"])
            run_cli(["db", "upgrade"], cfg)
            sb.reset_stats()
            full = run_cli(["sync", "run", "hubspot_bench.contacts", "--json"], cfg)
            (s,) = full.output["streams"]
            assert s["status"] == "ok", s
            served = sb.stats()["total"]
            sb.modify("contacts", args.changes)
            sb.reset_stats()
            inc = run_cli(["sync", "run", "hubspot_bench.contacts", "--json"], cfg)
            (i,) = inc.output["streams"]
            print(f"{db:<10} {s['read'] / full.seconds:>10,.0f} {full.seconds:>8.2f} {full.peak_rss_mb:>7.0f}MB "
                  f"{served or s['requests']:>9,} | {inc.seconds:>7.2f} {i['seconds']:>7.3f} {i['requests']:>5} "
                  f"{i['read']:>5}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
