"""A wave's `where` on records of a source that is not a SQL database (CSV, HubSpot, ...).

The records of one page are put in an in-memory SQLite table (one column per top-level field,
nested objects flattened with `_`: `properties.region` -> `properties_region`) and the `where`
runs there, so a wave filter has SQL's meaning whatever the source. A connector that can run the
filter on its own database (`match_where(stream, where, keys)`, as legacy_sql does) is asked instead.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from hub.sdk.types import RawRecord

__all__ = ["WhereError", "match_in_memory"]

_SAFE = re.compile(r"[^A-Za-z0-9_]")


class WhereError(ValueError):
    """The `where` of a wave cannot be evaluated (a syntax error, an unknown column)."""


def _flat(d: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in d.items():
        name = _SAFE.sub("_", f"{prefix}{k}")
        if isinstance(v, dict):
            _flat(v, f"{name}_", out)
        elif isinstance(v, list):
            continue
        else:
            out[name] = v if v is None or isinstance(v, int | float | str) else str(v)
    return out


def match_in_memory(records: Sequence[RawRecord], where: str) -> set[str]:
    """The external ids of `records` that satisfy `where` (SQLite's SQL)."""
    if not records:
        return set()
    rows = [_flat(r.data) for r in records]
    cols = sorted({c for r in rows for c in r})
    db = sqlite3.connect(":memory:")
    try:
        col_sql = ", ".join(f'"{c}"' for c in ["__id", *cols])
        db.execute(f"CREATE TABLE r ({col_sql})")
        marks = ", ".join("?" for _ in range(len(cols) + 1))
        db.executemany(f"INSERT INTO r VALUES ({marks})",
                       [(rec.external_id, *[row.get(c) for c in cols]) for rec, row in zip(records, rows, strict=True)])
        try:
            return {str(i) for (i,) in db.execute(f"SELECT __id FROM r WHERE {where}")}
        except sqlite3.Error as e:
            raise WhereError(f"`where: {where}` cannot be evaluated on these records: {e} "
                             f"(columns: {', '.join(cols[:30])})") from None
    finally:
        db.close()
