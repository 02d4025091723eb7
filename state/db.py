"""Database engines for both backends, and schema upgrades through Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from state.schema import CRM, HUB

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_SQLITE_URL = "sqlite:///.crmhub/crmhub.db"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite files get WAL and their folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, json_serializer=_json_dumps, json_deserializer=orjson.loads,
            connect_args={"timeout": 30}, **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA wal_autocheckpoint=4000")  # checkpoints (and their fsync) every ~16 MB
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE: take the write lock up front, so two writers queue instead of
            # failing with "database is locked" on their first write.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        # SQLite has no schemas: both live in the main database.
        return engine.execution_options(schema_translate_map={CRM: None, HUB: None})
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    engine = create_engine(
        url, json_serializer=_json_dumps, json_deserializer=orjson.loads,
        pool_pre_ping=True, **kwargs,
    )
    if engine.dialect.name == "postgresql":
        # A page's rows go as one multi-row INSERT, not one statement per row: measured
        # several times faster than psycopg's pipelined executemany (bench/sync_throughput.py).
        engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations up to `revision`."""
    from alembic import command

    if not is_sqlite(engine):
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {CRM}"))
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {HUB}"))
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never upgraded). Read with plain SQL: a sync
    checks it on every run, and importing Alembic for it cost ~7 MB and ~0.1 s."""
    schema = _version_schema(engine)
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version", schema=schema):
            return None
        table = f"{schema}.alembic_version" if schema else "alembic_version"
        return conn.execute(text(f"SELECT version_num FROM {table}")).scalar()


def head_revision() -> str:
    """The newest migration's revision. Each file in versions/ is named for its revision
    (`0007_....py`, revision "0007"): tests/test_state.py holds this to Alembic's own head."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _version_schema(engine: Engine) -> str | None:
    return None if is_sqlite(engine) else HUB


class SchemaOutOfDate(RuntimeError):
    pass


def ensure_schema(engine: Engine, *, auto_upgrade: bool | None = None) -> None:
    """Make sure the schema is at head.

    The embedded SQLite default upgrades itself; PostgreSQL is production, where a
    schema change is an operator's decision: it gets a clear error instead.
    """
    if auto_upgrade is None:
        auto_upgrade = is_sqlite(engine)
    if current_revision(engine) == head_revision():
        return
    if auto_upgrade:
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"the database at {engine.url.render_as_string(hide_password=True)} is not at the current schema "
        f"(at {current_revision(engine) or 'nothing'}, code wants {head_revision()}); "
        "run `crmhub db upgrade` first"
    )
