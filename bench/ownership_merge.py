"""Ownership merge throughput: field decisions per second in the pure core, no database.

    python bench/ownership_merge.py                      # 100,000 records x 10 fields
    python bench/ownership_merge.py --records 1000000

The second of two HubSpot instances merges into contacts the first one already set, under
the rules of issue 4 (owner, priority, fill_empty, most_recent wildcard). Per record: the
stored values and their provenance, ten incoming fields, about a third of them different,
vendor times on either side of the stored ones. Inputs are built before the clock starts
(a pool of 10,000 distinct records, cycled), so the figure is `Merger.merge` alone.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hub.ownership import Merger, parse_rules

RULES = {
    "contact.phone": {"rule": "owner", "system": "hubspot_a"},
    "contact.lifecycle_stage": {"rule": "priority", "systems": ["hubspot_b", "hubspot_a"]},
    "contact.title": {"rule": "fill_empty"},
    "contact.*": {"rule": "most_recent"},
}
FIELDS = ["email", "first_name", "last_name", "phone", "title", "lifecycle_stage", "owner_id",
          "created_at", "updated_at", "account_id"]
POOL = 10_000


def build(rng: random.Random) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any], datetime]]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(POOL):
        stored_at = t0 + timedelta(seconds=rng.randrange(10**7))
        current: dict[str, Any] = {
            "email": f"p{i}@example.com", "first_name": f"First{i}", "last_name": f"Last{i}",
            "phone": f"+1555{i:07d}", "title": rng.choice([None, "CEO", "CTO", "VP Sales"]),
            "lifecycle_stage": rng.choice(["lead", "customer"]), "owner_id": str(rng.randrange(50)),
            "created_at": t0, "updated_at": stored_at, "account_id": f"acc{i % 997}",
        }
        provenance = dict.fromkeys(FIELDS, ("hubspot_a", stored_at, "most_recent"))
        incoming = {f: (v if rng.random() < 0.67 else f"{v}-b") for f, v in current.items()}
        incoming["updated_at"] = vendor_at = stored_at + timedelta(seconds=rng.randrange(-86_400, 86_400))
        out.append((current, provenance, incoming, vendor_at))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    pool = build(random.Random(args.seed))
    merger = Merger(parse_rules(RULES), "contact")
    merge = merger.merge
    accepted = rejected = 0
    start = time.perf_counter()
    for n in range(args.records):
        current, provenance, incoming, vendor_at = pool[n % POOL]
        r = merge(current, provenance, incoming, "hubspot_b", vendor_at)
        accepted += len(r.values)
        rejected += len(r.decisions) - len(r.values)
    elapsed = time.perf_counter() - start
    fields = args.records * len(FIELDS)
    print(f"ownership merge: {args.records:,} records x {len(FIELDS)} fields in {elapsed:.3f}s")
    print(f"  {fields / elapsed:,.0f} field decisions/s ({elapsed / fields * 1e6:.2f} µs per field), "
          f"{args.records / elapsed:,.0f} records/s")
    print(f"  accepted {accepted:,}, rejected {rejected:,}, unchanged {fields - accepted - rejected:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
