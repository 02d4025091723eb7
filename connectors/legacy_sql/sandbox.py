"""A legacy CRM database to migrate from: companies, people and deals, as an old CRM keeps them.

    python -m connectors.legacy_sql.sandbox sqlite:///legacy.db --companies 300
    python -m connectors.legacy_sql.sandbox mysql+pymysql://root@127.0.0.1:3306/legacy_crm --companies 300

creates the tables (dropping earlier ones) and fills them with deterministic rows: every company
has a region (EMEA, AMER, APAC in turn), `people_per_company` people and `deals_per_company` deals.
Times are naive date-times, as legacy schemas store them. It prints one JSON line with the counts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    insert,
)

REGIONS = ("EMEA", "AMER", "APAC")
BASE = datetime(2019, 1, 1, 9, 0, 0)

legacy_metadata = MetaData()
companies = Table(
    "companies", legacy_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200)),
    Column("website", String(200)),
    Column("industry", String(100)),
    Column("region", String(10), index=True),
    Column("owner", String(50)),
    Column("fax", String(50)),  # a column no mapping reads (plan reports it)
    Column("created_on", DateTime),
    Column("updated_on", DateTime, index=True),
)
people = Table(
    "people", legacy_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("company_id", Integer, index=True),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("email", String(200)),
    Column("phone", String(50)),
    Column("job_title", String(100)),
    Column("stage", String(50)),
    Column("created_on", DateTime),
    Column("updated_on", DateTime, index=True),
)
deals = Table(
    "deals", legacy_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("company_id", Integer, index=True),
    Column("title", String(200)),
    Column("stage", String(50)),
    Column("amount", Numeric(14, 2)),
    Column("currency", String(3)),
    Column("close_date", Date),
    Column("notes", Text),
    Column("created_on", DateTime),
    Column("updated_on", DateTime, index=True),
)


def company_rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(1, n + 1):
        t = BASE + timedelta(minutes=i)
        yield {"id": i, "name": f"Company {i}", "website": f"company{i}.example.com", "industry": "Software",
               "region": REGIONS[(i - 1) % 3], "owner": f"u{i % 7}", "fax": None, "created_on": t, "updated_on": t}


def people_rows(n_companies: int, per: int) -> Iterator[dict[str, Any]]:
    pid = 0
    for c in range(1, n_companies + 1):
        for j in range(per):
            pid += 1
            t = BASE + timedelta(minutes=c, seconds=j + 1)
            yield {"id": pid, "company_id": c, "first_name": f"First{pid}", "last_name": f"Last{pid}",
                   "email": f"person{pid}@company{c}.example.com", "phone": f"+4420{pid:08d}",
                   "job_title": "Buyer" if pid % 2 else "Engineer", "stage": "customer", "created_on": t,
                   "updated_on": t}


def deal_rows(n_companies: int, per: int) -> Iterator[dict[str, Any]]:
    did = 0
    for c in range(1, n_companies + 1):
        for j in range(per):
            did += 1
            t = BASE + timedelta(minutes=c, seconds=30 + j)
            yield {"id": did, "company_id": c, "title": f"Deal {did}", "stage": "proposal",
                   "amount": Decimal(1000 + did) + Decimal("0.50"), "currency": "EUR",
                   "close_date": date(2020, 1, 1) + timedelta(days=did % 365), "notes": None,
                   "created_on": t, "updated_on": t}


def _chunked(rows: Iterator[dict[str, Any]], n: int = 5000) -> Iterator[list[dict[str, Any]]]:
    buf: list[dict[str, Any]] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def seed(engine: Engine, companies_n: int, people_per_company: int = 3, deals_per_company: int = 1) -> dict[str, int]:
    """(Re)create the legacy tables in `engine` and fill them."""
    legacy_metadata.drop_all(engine)
    legacy_metadata.create_all(engine)
    counts = {}
    for table, rows in ((companies, company_rows(companies_n)),
                        (people, people_rows(companies_n, people_per_company)),
                        (deals, deal_rows(companies_n, deals_per_company))):
        n = 0
        for chunk in _chunked(rows):
            with engine.begin() as c:
                c.execute(insert(table), chunk)
            n += len(chunk)
        counts[table.name] = n
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url", help="SQLAlchemy URL of the database to (re)create the legacy tables in")
    p.add_argument("--companies", type=int, default=300)
    p.add_argument("--people-per-company", type=int, default=3)
    p.add_argument("--deals-per-company", type=int, default=1)
    a = p.parse_args(argv)
    eng = create_engine(a.url)
    try:
        print(json.dumps(seed(eng, a.companies, a.people_per_company, a.deals_per_company)))
    finally:
        eng.dispose()


if __name__ == "__main__":
    main()
