"""Alembic environment: the engine comes from `state.db.alembic_config`."""

from __future__ import annotations

from alembic import context

from state.db import _version_schema, make_engine
from state.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line: take the URL from the ini
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///.crmhub/crmhub.db")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=_version_schema(engine),
        include_schemas=True,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
