"""A folder of CSV exports to migrate from, as a legacy CRM writes them.

    python -m connectors.legacy_csv.sandbox ./exports --companies 300
    python -m connectors.legacy_csv.sandbox ./exports --companies 300 --windows-1252

writes companies.csv, people.csv and deals.csv with the rows of connectors/legacy_sql/sandbox.py
(the same legacy CRM, exported): a header row, CRLF line ends, quoted fields where needed, dates
as `dd.mm.yyyy` for created_on and ISO-8601 for updated_on, empty strings for nulls. With
`--windows-1252` the files are in that encoding, without a BOM (a European spreadsheet's export).
It prints one JSON line with the row counts.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from connectors.legacy_sql.sandbox import company_rows, deal_rows, people_rows


def _text(k: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%d.%m.%Y") if k == "created_on" else v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def write(folder: Path, name: str, rows: Iterator[dict[str, Any]], encoding: str = "utf-8") -> int:
    n = 0
    with (folder / name).open("w", newline="", encoding=encoding, errors="replace") as f:
        w = None
        for r in rows:
            if w is None:
                w = csv.writer(f)
                w.writerow(list(r))
            w.writerow([_text(k, v) for k, v in r.items()])
            n += 1
    return n


def export(folder: Path, companies: int, people_per_company: int = 3, deals_per_company: int = 1,
           encoding: str = "utf-8") -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"companies": write(folder, "companies.csv", company_rows(companies), encoding),
            "people": write(folder, "people.csv", people_rows(companies, people_per_company), encoding),
            "deals": write(folder, "deals.csv", deal_rows(companies, deals_per_company), encoding)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--companies", type=int, default=300)
    p.add_argument("--people-per-company", type=int, default=3)
    p.add_argument("--deals-per-company", type=int, default=1)
    p.add_argument("--windows-1252", action="store_true")
    a = p.parse_args(argv)
    print(json.dumps(export(a.folder, a.companies, a.people_per_company, a.deals_per_company,
                            "cp1252" if a.windows_1252 else "utf-8")))


if __name__ == "__main__":
    main()
