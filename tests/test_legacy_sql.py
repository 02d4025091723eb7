"""legacy_sql: keyset pages, resume from any cursor, deltas by updated_at, never a write, config errors.

Run against a SQLite file and a real MariaDB database (the legacy CRM as it lives in production).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.exc import SQLAlchemyError

from connectors.legacy_sql import LegacySqlConnector
from connectors.legacy_sql.sandbox import people, seed
from hub.config import ConfigError, parse_config
from hub.registry import ConnectorFactory
from hub.sdk import FatalError
from hub.sdk.types import Page
from tests.test_legacy_support import mariadb_database

STREAMS = {"accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
           "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"},
           "opportunities": {"table": "deals", "key": "id", "updated_at": "updated_on"}}


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.postgres)])
def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'legacy.db'}"
        eng = create_engine(url)
        seed(eng, 25, people_per_company=3)
        eng.dispose()
        yield url
        return
    with mariadb_database() as url:
        eng = create_engine(url)
        seed(eng, 25, people_per_company=3)
        eng.dispose()
        yield url


def _connector(url: str, page_size: int = 10) -> LegacySqlConnector:
    cfg = parse_config({"connectors": {"legacy": {"kind": "legacy_sql", "url": url, "page_size": page_size,
                                                  "streams": STREAMS}}})
    c = ConnectorFactory(cfg).build("legacy")
    assert isinstance(c, LegacySqlConnector)
    return c


def _all(pages: Iterator[Page]) -> list[Page]:
    return list(pages)


def test_keyset_pages_read_every_row_once_and_end_in_a_delta_cursor(legacy_url: str) -> None:
    c = _connector(legacy_url)
    pages = _all(c.read("contacts", None))
    ids = [r.external_id for p in pages for r in p.records]
    assert ids == [str(i) for i in range(1, 76)]
    assert all(len(p.records) == 10 for p in pages[:-1]) and len(pages) == 8
    assert pages[-1].next_cursor is not None and pages[-1].next_cursor["phase"] == "delta"
    rec = pages[0].records[0]
    assert rec.data["email"] == "person1@company1.example.com"
    assert rec.updated_at is not None and rec.updated_at.endswith("+00:00")  # naive legacy time, read as UTC
    c.close()


def test_a_read_resumed_from_any_page_cursor_loses_nothing(legacy_url: str) -> None:
    c = _connector(legacy_url, page_size=7)
    pages = _all(c.read("accounts", None))
    every = [r.external_id for p in pages for r in p.records]
    for i, p in enumerate(pages[:-1]):
        rest = [r.external_id for q in c.read("accounts", p.next_cursor) for r in q.records]
        seen = [r.external_id for q in pages[: i + 1] for r in q.records]
        assert seen + rest == every
    c.close()


def test_delta_reads_only_rows_changed_since_the_load(legacy_url: str) -> None:
    c = _connector(legacy_url)
    last = _all(c.read("contacts", None))[-1].next_cursor
    eng = create_engine(legacy_url)
    later = datetime(2030, 1, 1, 12, 0, 0)
    with eng.begin() as tx:
        tx.execute(update(people).where(people.c.id.in_([5, 40])).values(job_title="Director", updated_on=later))
        tx.execute(update(people).where(people.c.id == 41).values(job_title="CTO", updated_on=later + timedelta(seconds=1)))
    eng.dispose()
    delta = _all(c.read("contacts", last))
    changed = [r.external_id for p in delta for r in p.records]
    # the newest row at load time is read again (inclusive start), then the three changes in time order
    assert changed[-3:] == ["5", "40", "41"]
    assert set(changed) <= {"5", "40", "41", "75"}
    again = _all(c.read("contacts", delta[-1].next_cursor))
    assert [r.external_id for p in again for r in p.records] == []  # keyset (time, key): nothing twice
    c.close()


def test_the_connection_cannot_write_the_legacy_database(legacy_url: str) -> None:
    c = _connector(legacy_url)
    with pytest.raises(SQLAlchemyError), c.engine.begin() as tx:
        tx.execute(text("UPDATE people SET job_title = 'x' WHERE id = 1"))
    with pytest.raises(FatalError, match="legacy query failed"):
        c._fetch("DELETE FROM people WHERE id = 1", {})
    assert next(iter(c.read("contacts", None))).records[0].external_id == "1"  # row 1 is still there
    c.close()


def test_match_where_runs_the_wave_filter_in_the_legacy_database(legacy_url: str) -> None:
    c = _connector(legacy_url)
    keys = [str(i) for i in range(1, 10)]
    assert c.match_where("accounts", "region = 'EMEA'", keys) == {"1", "4", "7"}
    assert c.count_rows("contacts") == 75
    c.close()


def test_config_mistakes_name_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        ConnectorFactory(parse_config({"connectors": {"legacy": {
            "kind": "legacy_sql", "url": "sqlite:///x.db",
            "streams": {"accounts": {"table": "companies; drop table x", "key": "id"}}}}}))
    text_ = "\n".join(e.value.problems)
    assert "connectors.legacy.streams.accounts.table" in text_ and "plain SQL identifier" in text_
    with pytest.raises(ConfigError) as e:
        ConnectorFactory(parse_config({"connectors": {"legacy": {
            "kind": "legacy_sql", "url": "sqlite:///x.db", "streams": {"widgets": {"table": "w"}}}}}))
    text_ = "\n".join(e.value.problems)
    assert "connectors.legacy.streams" in text_ and "widgets" in text_ and "target:" in text_


def test_unknown_stream_and_missing_table_are_clear_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_engine(url).connect().close()
    c = _connector(url)
    with pytest.raises(FatalError, match=r"no such table|doesn.t exist"):
        list(c.read("contacts", None))
    with pytest.raises(FatalError, match="no stream 'widgets'"):
        list(c.read("widgets", None))
    c.close()


def test_the_sandbox_is_runnable_and_fills_a_legacy_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from connectors.legacy_sql.sandbox import main

    url = f"sqlite:///{tmp_path / 'sb.db'}"
    main([url, "--companies", "4", "--people-per-company", "2"])
    assert capsys.readouterr().out.strip() == '{"companies": 4, "people": 8, "deals": 4}'
    c = _connector(url)
    assert c.match_where("accounts", "region = 'AMER'", ["1", "2", "3", "4"]) == {"2"}
    c.close()
