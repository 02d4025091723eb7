"""Migration benchmark: `crmhub migrate run`, `verify` and `delta` of one wave of legacy contacts.

    .venv/bin/python bench/migrate_run.py --contacts 10000                       # SQLite legacy -> SQLite
    .venv/bin/python bench/migrate_run.py --contacts 1000000 --source mariadb --db postgres
    .venv/bin/python bench/migrate_run.py --contacts 1000000 --source csv --db postgres

The legacy CRM holds `contacts` people and one company per ten of them (connectors/legacy_sql/
sandbox.py), or the same as CSV exports; the wave takes them all. Each command runs as its own
`python -m hub.cli` process; the figures are its wall clock and its own peak RSS. `delta` runs
after `--changes` legacy people were edited; then (SQL sources) 100 people are deleted outright
and `delta --deletes` sweeps the wave for them. Targets (issue 8): run >= 20,000 records/s, verify
>= 50,000 records/s, delta after 1,000 changes < 5 s, peak RSS <= 150 MB and flat as N grows.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, run_cli
from connectors.legacy_sql.sandbox import company_rows, people, people_rows, seed

MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
STREAMS_SQL = {"accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
               "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"}}
PER_COMPANY = 10


def legacy_sql(kind: str, workdir: Path, companies: int) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'legacy.db'}"
        Path(workdir / "legacy.db").unlink(missing_ok=True)
    else:
        admin = create_engine(MARIADB_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text("DROP DATABASE IF EXISTS crmhub_bench_legacy"))
            c.execute(text("CREATE DATABASE crmhub_bench_legacy"))
        admin.dispose()
        url = f"{MARIADB_ADMIN}crmhub_bench_legacy"
    eng = create_engine(url)
    seed(eng, companies, people_per_company=PER_COMPANY, deals_per_company=0)
    eng.dispose()
    return url


def _csv(path: Path, rows: Any, changed: set[int] | None = None, at: datetime | None = None) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = None
        for r in rows:
            if changed is not None and r["id"] in changed:
                r = {**r, "job_title": "Changed", "updated_on": at}
            if w is None:
                w = csv.DictWriter(f, fieldnames=list(r))
                w.writeheader()
            w.writerow({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})


def legacy_csv(workdir: Path, companies: int) -> Path:
    folder = workdir / "export"
    folder.mkdir(exist_ok=True)
    _csv(folder / "companies.csv", company_rows(companies))
    _csv(folder / "people.csv", people_rows(companies, PER_COMPANY))
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--source", choices=["sqlite", "mariadb", "csv"], default="sqlite")
    p.add_argument("--changes", type=int, default=1000)
    p.add_argument("--page-size", type=int, default=1000)  # the connector default: 5,000 is ~4% faster, 200 MB
    a = p.parse_args()
    companies = max(1, a.contacts // PER_COMPANY)
    workdir = Path(tempfile.mkdtemp(prefix="crmhub-migrate-bench-"))
    db = fresh_database(a.db, workdir, "crmhub_bench_migrate")
    if a.source == "csv":
        folder = legacy_csv(workdir, companies)
        conn: dict[str, Any] = {"kind": "legacy_csv", "path": str(folder), "page_size": a.page_size, "streams": {
            "accounts": {"file": "companies.csv", "key": "id", "updated_at": "updated_on"},
            "contacts": {"file": "people.csv", "key": "id", "updated_at": "updated_on"}}}
        mapping = "legacy_csv"
    else:
        url = legacy_sql(a.source, workdir, companies)
        conn = {"kind": "legacy_sql", "url": url, "page_size": a.page_size, "streams": STREAMS_SQL}
        mapping = "legacy"
    # the packaged mapping, less the stream this legacy schema does not have
    maps = workdir / "mappings"
    maps.mkdir()
    src = (Path(__file__).resolve().parent.parent / "mappings" / f"{mapping}.yaml").read_text()
    (maps / "legacy.yaml").write_text(src.split("  opportunities:")[0])
    cfg = {"database": db, "connectors": {"legacy": conn},
           "waves": {"all": {"source": "legacy", "root": "accounts"}}}
    config = workdir / "crmhub.yaml"
    config.write_text(json.dumps(cfg))
    run_cli(["db", "upgrade"], config)

    records = companies + companies * PER_COMPANY
    out: dict[str, Any] = {"contacts": a.contacts, "records": records, "db": a.db, "source": a.source}
    m = run_cli(["migrate", "run", "all", "--json"], config)
    assert m.output.get("status") == "ok", m.output
    out["run_records_per_s"] = round(records / m.seconds)
    out["run_seconds"] = round(m.seconds, 1)
    out["run_peak_rss_mb"] = round(m.peak_rss_mb)
    out["run_cpu_us_per_record"] = {"crmhub": round(m.cpu / records * 1e6),
                                    "postgres": round(m.pg_cpu / records * 1e6) if m.pg_cpu is not None else None}
    try:
        v = run_cli(["migrate", "verify", "all", "--json"], config)
    except SystemExit as e:  # verify exits 1 on differences: report them, not a crash
        raise SystemExit(f"verify found differences: {e}") from None
    out["verify_records_per_s"] = round(records / v.seconds)
    out["verify_peak_rss_mb"] = round(v.peak_rss_mb)
    out["verify_cpu_us_per_record"] = {"crmhub": round(v.cpu / records * 1e6),
                                       "postgres": round(v.pg_cpu / records * 1e6) if v.pg_cpu is not None else None}

    changed = set(range(1, min(a.changes, companies * PER_COMPANY) + 1))
    at = datetime(2031, 1, 1) + timedelta(seconds=1)
    if a.source == "csv":
        _csv(folder / "people.csv", people_rows(companies, PER_COMPANY), changed, at)
    else:
        eng = create_engine(url)
        with eng.begin() as c:
            c.execute(update(people).where(people.c.id.in_(sorted(changed))).values(job_title="Changed", updated_on=at))
        eng.dispose()
    d = run_cli(["migrate", "delta", "all", "--json"], config)
    out["delta_changes"] = len(changed)
    out["delta_seconds"] = round(d.seconds, 2)
    out["delta_updated"] = sum(s["updated"] for s in d.output["streams"])
    out["delta_peak_rss_mb"] = round(d.peak_rss_mb)
    if a.source != "csv":  # the hard-delete sweep (`delta --deletes`): a keyed read per 1,000 of the wave's ids
        with eng.begin() as c:
            c.execute(people.delete().where(people.c.id <= 100))
        eng.dispose()
        s = run_cli(["migrate", "delta", "all", "--deletes", "--json"], config)
        out["delta_deletes_seconds"] = round(s.seconds, 2)
        out["delta_deletes_found"] = sum(x["deleted"] for x in s.output["streams"])
        out["delta_deletes_peak_rss_mb"] = round(s.peak_rss_mb)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
