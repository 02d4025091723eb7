"""activity ingest (versions, participants, typed fields) and OAuth tokens

Revision ID: 0005
Revises: 0004

crm.activities gains the shared activity-ingest fields (ended_at, direction, subject,
status, url, version, vendor_updated_at, dedupe_key); crm.activity_participants keeps who each
activity involves (matched to a contact or not yet); hub.activity_versions keeps every
version of every activity; hub.routing_state keeps lead routing's round robin; hub.oauth_tokens holds
encrypted OAuth grants.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ACTIVITY_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[Any], str | None], ...] = (  # name, type, default
    ("ended_at", sa.DateTime(timezone=True), None),
    ("direction", sa.String(length=16), None),
    ("subject", sa.Text(), None),
    ("status", sa.String(length=32), None),
    ("url", sa.Text(), None),
    ("version", sa.Integer(), "1"),
    ("vendor_updated_at", sa.DateTime(timezone=True), None),
    ("dedupe_key", sa.String(length=255), None),
)


def _crm() -> str | None:
    # ALTER TABLE is not covered by the engine's schema translation on SQLite
    return "crm" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    for name, type_, default in ACTIVITY_COLUMNS:
        op.add_column("activities", sa.Column(name, type_, nullable=default is None,
                                              server_default=default), schema=_crm())
    op.create_index("ix_activities_dedupe_key", "activities", ["dedupe_key"], schema="crm")
    op.create_table(
        "activity_participants",
        sa.Column("activity_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("response", sa.String(length=32), nullable=True),
        sa.Column("contact_id", sa.String(length=36), nullable=True),
        sa.Column("internal", sa.Boolean(), server_default=sa.false(), nullable=False),
        schema="crm",
    )
    op.create_index("ix_activity_participants_activity_id", "activity_participants", ["activity_id"], schema="crm")
    op.create_index("ix_activity_participants_contact_id", "activity_participants", ["contact_id"], schema="crm")
    for col in ("email", "phone"):
        op.create_index(f"ix_activity_participants_unmatched_{col}", "activity_participants", [col],
                        schema="crm", postgresql_where=sa.text("contact_id IS NULL"),
                        sqlite_where=sa.text("contact_id IS NULL"))
    op.create_table(
        "activity_versions",
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("vendor_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("source", "external_id", "version", name=op.f("pk_activity_versions")),
        schema="hub",
    )
    op.create_table(
        "routing_state",
        sa.Column("team", sa.String(length=128), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team", name=op.f("pk_routing_state")),
        schema="hub",
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("connector", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=320), server_default="", nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("needs_reauth", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reauth_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("connector", "subject", name=op.f("pk_oauth_tokens")),
        schema="hub",
    )


def downgrade() -> None:
    op.drop_table("oauth_tokens", schema="hub")
    op.drop_table("routing_state", schema="hub")
    op.drop_table("activity_versions", schema="hub")
    for col in ("email", "phone"):
        op.drop_index(f"ix_activity_participants_unmatched_{col}", table_name="activity_participants", schema="crm")
    op.drop_index("ix_activity_participants_contact_id", table_name="activity_participants", schema="crm")
    op.drop_index("ix_activity_participants_activity_id", table_name="activity_participants", schema="crm")
    op.drop_table("activity_participants", schema="crm")
    op.drop_index("ix_activities_dedupe_key", table_name="activities", schema="crm")
    for name, _type, _default in reversed(ACTIVITY_COLUMNS):
        op.drop_column("activities", name, schema=_crm())
