"""Shared fixtures: the same tests run against SQLite (embedded default) and PostgreSQL.

PostgreSQL comes from CRMHUB_TEST_PG_URL (default: the local server on 127.0.0.1:5432,
database `test`). Where it does not answer, PostgreSQL tests skip with the reason;
with CRMHUB_REQUIRE_PG=1 (CI) they fail instead, so CI never passes on a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from state.db import make_engine, upgrade
from state.schema import metadata

PG_ADMIN_URL = os.environ.get("CRMHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: one database per test session, so concurrent runs on one server do not share state
PG_TEST_DB = f"crmhub_pytest_{os.getpid()}"
REQUIRE_PG = os.environ.get("CRMHUB_REQUIRE_PG") == "1"


def _pg_unavailable() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as e:
        return f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)}: {e}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh database on the test server, at the current schema."""
    why = _pg_unavailable()
    if why:
        if REQUIRE_PG:
            pytest.fail(f"CRMHUB_REQUIRE_PG=1 but {why}")
        pytest.skip(why)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {PG_TEST_DB}"))
    url = make_url(PG_ADMIN_URL).set(database=PG_TEST_DB).render_as_string(hide_password=False)
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    yield url
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
    admin.dispose()


def truncate_all(engine: Engine) -> None:
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f"{t.schema}.{t.name}" for t in metadata.sorted_tables)
            c.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        else:
            for t in metadata.sorted_tables:
                c.execute(t.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at the current schema, empty: SQLite in a temp file, or the PostgreSQL test database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crmhub.db'}"
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
        yield url
        return
    url = request.getfixturevalue("pg_url")
    eng = make_engine(url)
    truncate_all(eng)
    eng.dispose()
    yield url


@pytest.fixture
def pg_only_url(pg_url: str) -> Iterator[str]:
    eng = make_engine(pg_url)
    truncate_all(eng)
    eng.dispose()
    yield pg_url
