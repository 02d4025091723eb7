"""Second-source merge throughput: identity + ownership merge + provenance + change log, into PostgreSQL.

    python bench/merge_throughput.py                     # 100,000 people in two HubSpot portals
    python bench/merge_throughput.py --contacts 20000 --db sqlite

Two HubSpot sandboxes, each its own process, generated from one seed: the same people (same
emails, same companies) in both. Portal B's records are a day newer, and a share of them carry
conflicting values (phone, lifecycle stage, job title, first name). The rules of issue 4 apply:

    contact.phone: {rule: owner, system: hubspot_a}
    contact.lifecycle_stage: {rule: priority, systems: [hubspot_b, hubspot_a]}
    contact.title: {rule: fill_empty}
    contact.*: {rule: most_recent}

Untimed: a fresh database, the full sync of portal A (companies, contacts), then portal B's
companies (matched to A's accounts by domain). Timed, from the outside, as a child process
(`crmhub sync run hubspot_b.contacts --json`: wall clock and peak RSS): portal B's contacts,
every one without a link, matched by email in one query per page, merged field by field, its
provenance and a change-log row (the match, accepted and refused fields) written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import Sandbox, fresh_database, run_cli

from state.db import make_engine
from state.schema import change_log, contacts, external_links

RULES = {
    "contact.phone": {"rule": "owner", "system": "hubspot_a"},
    "contact.lifecycle_stage": {"rule": "priority", "systems": ["hubspot_b", "hubspot_a"]},
    "contact.title": {"rule": "fill_empty"},
    "contact.*": {"rule": "most_recent"},
}
DAY_MS = 86_400_000
#: B's conflicting edits, each on its own share of the people (the sandbox picks them)
CONFLICTS = ({"phone": "+1 555 000 1111"}, {"lifecyclestage": "customer"}, {"jobtitle": "CTO"},
             {"firstname": "Bea"})


def _config(workdir: Path, database: str, urls: dict[str, str], token: str) -> Path:
    cfg = {
        "database": database,
        "connectors": {name: {"kind": "hubspot", "base_url": url, "auth": {"token": token},
                              "streams": ["companies", "contacts"], "requests_per_second": 100_000,
                              "search_lag_ms": 0} for name, url in urls.items()},
        "ownership": RULES,
    }
    p = workdir / "crmhub.yaml"
    p.write_text(json.dumps(cfg))
    return p


def _counts(url: str) -> dict[str, Any]:
    eng = make_engine(url)
    with eng.connect() as c:
        n = c.execute(select(func.count()).select_from(contacts)).scalar_one()
        links = dict(c.execute(select(external_links.c.connector, func.count()).where(
            external_links.c.entity == "contact").group_by(external_links.c.connector)).all())
        ops = dict(c.execute(select(change_log.c.op, func.count()).where(
            change_log.c.entity == "contact", change_log.c.source == "hubspot_b").group_by(change_log.c.op)).all())
    eng.dispose()
    return {"contacts": n, "links": links, "b_change_log": ops}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--conflicts", type=float, default=0.1, help="share of people with each conflicting edit in B")
    ap.add_argument("--profile", metavar="FILE", help="also write a cProfile of the timed run (slows it down)")
    args = ap.parse_args()
    n, token = args.contacts, "bench-token"
    opts = {"companies": max(1, n // 10), "deals": 0, "rate_limit_max": 10**9, "seed": 7}
    print(f"second-source merge: {n:,} people in two HubSpot sandboxes (same seed), B a day newer, "
          f"{len(CONFLICTS)} x {args.conflicts:.0%} of B's people with a conflicting field; database {args.db}")
    with tempfile.TemporaryDirectory() as tmp, \
            Sandbox(n, token, **opts) as a, \
            Sandbox(n, token, base_time_ms=1_700_000_000_000 + DAY_MS, **opts) as b:
        for props in CONFLICTS:
            b.admin.post("/_sandbox/modify", json={"type": "contacts", "count": int(n * args.conflicts),
                                                   "properties": props}).raise_for_status()
        work = Path(tmp)
        url = fresh_database(args.db, work, "crmhub_bench_merge")
        cfg = _config(work, url, {"hubspot_a": a.url, "hubspot_b": b.url}, token)
        run_cli(["db", "upgrade"], cfg)
        first = run_cli(["sync", "run", "hubspot_a", "--json"], cfg)
        assert all(s["status"] == "ok" for s in first.output["streams"]), first.output
        a_read = sum(s["read"] for s in first.output["streams"])
        print(f"  source A, full sync (untimed setup): {a_read:,} records in {first.seconds:.1f}s "
              f"({a_read / first.seconds:,.0f}/s), peak RSS {first.peak_rss_mb:.0f} MB")
        comp = run_cli(["sync", "run", "hubspot_b.companies", "--json"], cfg)
        assert comp.output["streams"][0]["status"] == "ok", comp.output
        b.reset_stats()
        timed = run_cli(["sync", "run", "hubspot_b.contacts", "--json"], cfg, profile=args.profile)
        (s,) = timed.output["streams"]
        assert s["status"] == "ok", s
        served = b.stats()["total"]
        counts = _counts(url)
        print(f"  source B, full sync of contacts:     {s['read']:,} records in {timed.seconds:.2f}s wall clock")
        print(f"    {s['read'] / timed.seconds:,.0f} records/s end to end "
              f"({s['read'] / s['seconds']:,.0f}/s inside the run, {s['seconds']:.2f}s), "
              f"peak RSS {timed.peak_rss_mb:.0f} MB, {served:,} requests")
        print(f"    {timed.cpu_line(s['read'])}")
        print(f"    store: {counts['contacts']:,} contacts, links {counts['links']}, "
              f"B's change-log rows by op {counts['b_change_log']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
