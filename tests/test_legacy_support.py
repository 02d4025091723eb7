"""Legacy databases for the migration tests (no tests here): SQLite files, and MariaDB databases on 127.0.0.1:3306.

Each MariaDB database is created with a name unique to the test session and dropped afterwards.
Where MariaDB does not answer, its tests skip with the reason (fail under CRMHUB_REQUIRE_PG=1, as CI
runs every database).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count

import pytest
from sqlalchemy import create_engine, text

MARIADB_ADMIN_URL = os.environ.get("CRMHUB_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
REQUIRE = os.environ.get("CRMHUB_REQUIRE_PG") == "1"
_n = count(1)


def mariadb_unavailable() -> str | None:
    try:
        eng = create_engine(MARIADB_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as e:
        return f"MariaDB not reachable at 127.0.0.1:3306: {type(e).__name__}: {e}"


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test; yields its URL and drops it afterwards."""
    why = mariadb_unavailable()
    if why:
        if REQUIRE:
            pytest.fail(why)
        pytest.skip(why)
    name = f"crmhub_legacy_{os.getpid()}_{next(_n)}"
    admin = create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield f"{MARIADB_ADMIN_URL.rstrip('/')}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
