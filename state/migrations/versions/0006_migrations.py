"""wave migrations from legacy sources: waves, the id crosswalk, rejected rows

Revision ID: 0006
Revises: 0005

hub.migration_waves holds each wave's persisted definition and state; hub.migration_items is
the crosswalk (legacy id -> canonical id, what was done, checksum); hub.migration_rejects
lists the rows a wave could not use, with their reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "migration_waves",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("root", sa.String(length=128), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("pass_no", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_run_at", TS, nullable=True),
        sa.Column("last_run", JSON, nullable=True),
        sa.Column("last_verified_at", TS, nullable=True),
        sa.Column("last_verify_ok", sa.Boolean(), nullable=True),
        sa.Column("last_verify", JSON, nullable=True),
        sa.Column("cutover_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_migration_waves")),
        schema="hub",
    )
    op.create_table(
        "migration_items",
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("stream", sa.String(length=128), nullable=False),
        sa.Column("legacy_id", sa.String(length=255), nullable=False),
        sa.Column("wave", sa.String(length=128), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("checksum", sa.String(length=32), nullable=False),
        sa.Column("pass_no", sa.Integer(), nullable=False),
        sa.Column("written_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("source", "stream", "legacy_id", name=op.f("pk_migration_items")),
        schema="hub",
    )
    op.create_index("ix_migration_items_wave_stream", "migration_items", ["wave", "stream"], schema="hub")
    op.create_index("ix_migration_items_entity_entity_id", "migration_items", ["entity", "entity_id"],
                    schema="hub")
    op.create_table(
        "migration_rejects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("wave", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("stream", sa.String(length=128), nullable=False),
        sa.Column("legacy_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("pass_no", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_rejects")),
        schema="hub",
    )
    op.create_index("ix_migration_rejects_wave_stream", "migration_rejects", ["wave", "stream"], schema="hub")


def downgrade() -> None:
    op.drop_index("ix_migration_rejects_wave_stream", table_name="migration_rejects", schema="hub")
    op.drop_table("migration_rejects", schema="hub")
    op.drop_index("ix_migration_items_entity_entity_id", table_name="migration_items", schema="hub")
    op.drop_index("ix_migration_items_wave_stream", table_name="migration_items", schema="hub")
    op.drop_table("migration_items", schema="hub")
    op.drop_table("migration_waves", schema="hub")
