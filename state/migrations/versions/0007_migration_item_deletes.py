"""a wave's crosswalk remembers legacy deletes: hub.migration_items.deleted_at

Revision ID: 0007
Revises: 0006

Set when `migrate delta` applied a legacy delete (a soft-delete flag, or a row gone from the
legacy table) to the record; cleared when the record comes back. The row keeps its action, so a
rollback still knows whether the wave created the record or changed it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    # ALTER TABLE is not covered by the engine's schema translation: SQLite has no schemas
    return "hub" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    op.add_column("migration_items", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
                  schema=_schema())


def downgrade() -> None:
    with op.batch_alter_table("migration_items", schema=_schema()) as b:
        b.drop_column("deleted_at")
