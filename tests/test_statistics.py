"""Planner statistics during bulk loads (PostgreSQL): only tables the planner thinks small are analysed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from state import repos
from state.db import make_engine
from state.schema import accounts, change_log, contacts


def _planned(eng: Any, name: str) -> float:
    """The planner's row estimate (pg_class.reltuples, -1 until first analysed): transactional, no stats lag."""
    with eng.connect() as c:
        return c.execute(text("SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname || '.' || c.relname = :n"), {"n": name}).scalar_one()


def _add_accounts(eng: Any, first: int, last: int) -> None:
    with eng.begin() as c:
        c.execute(text("INSERT INTO crm.accounts (id, name) SELECT g::text, 'a' FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g"),
                  {"a": first, "b": last})


def test_only_tables_smaller_than_the_load_are_analysed(pg_only_url: str) -> None:
    eng = make_engine(pg_only_url)
    try:
        _add_accounts(eng, 1, 2000)
        repos.refresh_statistics(eng, [accounts, contacts, change_log], rows=1000)
        assert _planned(eng, "crm.accounts") == 2000
        assert _planned(eng, "crm.contacts") >= 0  # analysed (it was -1 or smaller than the load)
        # accounts is planned at 2,000 rows: a load of 1,000 does not analyse it again ...
        _add_accounts(eng, 2001, 2500)
        repos.refresh_statistics(eng, [accounts], rows=1000)
        assert _planned(eng, "crm.accounts") == 2000
        # ... a load bigger than what the planner knows does
        repos.refresh_statistics(eng, [accounts], rows=5000)
        assert _planned(eng, "crm.accounts") == 2500
    finally:
        eng.dispose()


def test_the_change_log_is_analysed_on_its_key_columns_only(pg_only_url: str) -> None:
    """A wave reads the change log by entity id every page: its planner statistics must not
    wait for autovacuum (off on some servers), but its JSON column is not worth sampling."""
    eng = make_engine(pg_only_url)
    try:
        with eng.begin() as c:
            c.execute(text("ALTER TABLE hub.change_log SET (autovacuum_enabled = false)"))
            c.execute(text("INSERT INTO hub.change_log (entity, entity_id, op, source, at, fields) "
                           "SELECT 'contact', g::text, 'create', 'x', now(), '{\"a\": 1}' FROM generate_series(1, 300) g"))
        repos.refresh_statistics(eng, [change_log], rows=10_000)
        assert _planned(eng, "hub.change_log") >= 300
        with eng.connect() as c:
            cols = set(c.execute(text("SELECT attname FROM pg_stats WHERE schemaname = 'hub' "
                                      "AND tablename = 'change_log'")).scalars())
        assert {"entity", "entity_id", "run_id"} <= cols
    finally:
        with eng.begin() as c:
            c.execute(text("ALTER TABLE hub.change_log RESET (autovacuum_enabled)"))
        eng.dispose()
