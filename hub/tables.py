"""Rich tables for the terminal: the first column (a stream or record name) never wraps."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def table(first: str, *columns: str, **kwargs: Any) -> Table:
    t = Table(**kwargs)
    t.add_column(first, no_wrap=True)
    for c in columns:
        t.add_column(c, justify="right" if c in NUMERIC else "left")
    return t


NUMERIC = {"read", "written", "deleted", "failed", "requests", "seconds", "lag", "retry queue", "dead", "attempts"}
