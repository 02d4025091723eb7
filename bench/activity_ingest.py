"""Activity ingest throughput: calls with participant resolution into a store that holds the contacts.

    python bench/activity_ingest.py                          # 100,000 calls, 100,000 contacts, PostgreSQL
    python bench/activity_ingest.py --calls 20000 --db sqlite

The Twilio sandbox (its own thread in this process) holds N calls over 30 days; the store is seeded
with N contacts (untimed), among them one per outside number the calls use, so every call's caller
or callee resolves to a contact (and its account) by E.164 number. Timed, from the outside, as a
child process: `crmhub sync run twilio_bench.calls --json` — Twilio's list pages (1,000 calls),
the shared activity ingest (participants normalised, contacts matched, versions and participants
written), one transaction per 1,000 records. Then the same sync again: nothing new, no writes.
Last, what an incremental mail sync with nothing new costs: Gmail, `--mailboxes` of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import fresh_database, run_cli

from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, SandboxServer, TwilioStore
from hub.ids import new_id
from state.bulk import insert_rows
from state.db import make_engine
from state.schema import accounts, activities, activity_participants, contacts

OURS = ["+14155550100", "+14155550101"]


def seed(url: str, store: TwilioStore, n: int) -> int:
    """N contacts in 1,000 accounts: first one per outside number of the calls, then others."""
    numbers = sorted({c["from"] if c["direction"] == "inbound" else c["to"] for c in store.calls.values()})
    eng = make_engine(url)
    accs = [{"id": new_id(), "name": f"Account {i}", "domain": f"a{i}.example"} for i in range(1000)]
    with eng.begin() as c:
        insert_rows(c, accounts, accs)
        for start in range(0, n, 5000):
            rows = []
            for i in range(start, min(n, start + 5000)):
                phone = numbers[i] if i < len(numbers) else f"+1312{i:07d}"
                rows.append({"id": new_id(), "account_id": accs[i % 1000]["id"], "email": f"person{i}@example.com",
                             "phone": phone, "first_name": f"P{i}",
                             "created_at": datetime(2026, 1, 1, tzinfo=UTC)})
            insert_rows(c, contacts, rows)
    if eng.dialect.name == "postgresql":
        with eng.begin() as c:
            c.exec_driver_sql("ANALYZE crm.contacts")
    eng.dispose()
    return len(numbers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--contacts", type=int, default=None, help="default: as many as calls")
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--prefetch", type=int, default=None, help="sync.prefetch_pages (default: the hub's)")
    ap.add_argument("--profile", metavar="FILE", help="also write a cProfile of the timed run (slows it down)")
    ap.add_argument("--mailboxes", type=int, default=10, help="then a Gmail sync of this many mailboxes, twice (0: skip)")
    args = ap.parse_args()
    n, n_contacts = args.calls, args.contacts or args.calls
    days = 30
    store = TwilioStore(calls=n, days=days, our_numbers=OURS)
    print(f"activity ingest: {n:,} Twilio calls over {days} days against {n_contacts:,} contacts; database {args.db}")
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(store) as server:
        work = Path(tmp)
        url = fresh_database(args.db, work, "crmhub_bench_activities")
        cfg = work / "crmhub.yaml"
        cfg.write_text(json.dumps({"database": url, "connectors": {"twilio_bench": {
            "kind": "twilio", "base_url": server.url, "requests_per_second": 100_000, "lookback_days": days + 1,
            "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}, "internal": OURS}},
            **({"sync": {"prefetch_pages": args.prefetch}} if args.prefetch is not None else {})}))
        run_cli(["db", "upgrade"], cfg)
        distinct = seed(url, store, n_contacts)
        print(f"  seeded {n_contacts:,} contacts ({distinct:,} with the calls' outside numbers), untimed")
        timed = run_cli(["sync", "run", "twilio_bench.calls", "--json"], cfg, profile=args.profile)
        (s,) = timed.output["streams"]
        assert s["status"] == "ok", s
        print(f"  full sync: {s['read']:,} calls in {timed.seconds:.2f}s wall clock: "
              f"{s['read'] / timed.seconds:,.0f} activities/s end to end "
              f"({s['read'] / s['seconds']:,.0f}/s inside the run), peak RSS {timed.peak_rss_mb:.0f} MB, "
              f"{s['requests']:,} requests")
        print(f"  {timed.cpu_line(s['read'], 'activity')}")
        eng = make_engine(url)
        with eng.connect() as c:
            total = c.execute(select(func.count()).select_from(activities)).scalar_one()
            matched = c.execute(select(func.count()).select_from(activities).where(
                activities.c.contact_id.is_not(None))).scalar_one()
            parts = c.execute(select(func.count()).select_from(activity_participants)).scalar_one()
        eng.dispose()
        print(f"  store: {total:,} activities, {matched:,} attached to a contact, {parts:,} participants")
        again = run_cli(["sync", "run", "twilio_bench.calls", "--json"], cfg)
        (s2,) = again.output["streams"]
        print(f"  again, nothing new: {s2['read']:,} read, {s2['written']:,} written, {s2['requests']:,} requests, "
              f"{again.seconds:.2f}s wall clock")
    if args.mailboxes:
        _mail_nothing_new(args.mailboxes, args.db)
    return 0


def _mail_nothing_new(boxes: int, db: str) -> None:
    """Gmail: what an incremental sync with nothing new costs (issue 7: one request per mailbox)."""
    from connectors.gmail.sandbox import GmailSandbox, GmailStore

    tokens = {f"user{i}@ourco.example": f"ya29.bench-mailbox-{i:04d}" for i in range(boxes)}
    store = GmailStore(tokens, 50)
    with tempfile.TemporaryDirectory() as tmp, GmailSandbox(store) as server:
        work = Path(tmp)
        url = fresh_database(db, work, "crmhub_bench_mail")
        cfg = work / "crmhub.yaml"
        cfg.write_text(json.dumps({"database": url, "connectors": {"gmail_bench": {
            "kind": "gmail", "base_url": server.url, "requests_per_second": 100_000,
            "mailboxes": [{"address": a, "access_token": t} for a, t in tokens.items()]}}}))
        run_cli(["db", "upgrade"], cfg)
        first = run_cli(["sync", "run", "gmail_bench.messages", "--json"], cfg)
        (s1,) = first.output["streams"]
        again = run_cli(["sync", "run", "gmail_bench.messages", "--json"], cfg)
        (s2,) = again.output["streams"]
    print(f"mail: {boxes} Gmail mailboxes, {s1['read']:,} messages in the first sync ({s1['requests']:,} requests); "
          f"nothing new: {s2['read']:,} read, {s2['requests']:,} requests ({s2['requests'] / boxes:g} per mailbox), "
          f"{again.seconds:.2f}s wall clock")


if __name__ == "__main__":
    raise SystemExit(main())
