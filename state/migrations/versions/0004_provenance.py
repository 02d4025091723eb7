"""provenance per canonical field, identity match-key indexes

Revision ID: 0004
Revises: 0003

A JSON(B) column `provenance` on the four entity tables: {field: [system, vendor_at,
rule, hub_at, external_id]} (README "Provenance"), read and written with the row. And
the indexes identity resolution matches on (hub.identity): contacts by lower-cased email
(and by phone among contacts without an email), accounts by lower-cased domain and name
(and by name among accounts without a domain).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ENTITY_TABLES = ("accounts", "contacts", "leads", "opportunities")
INDEXES = (  # name, table, expression, partial: only rows without the stronger key
    ("ix_accounts_domain_lower", "accounts", "lower(domain)", None),
    ("ix_accounts_name_lower", "accounts", "lower(name)", None),
    ("ix_accounts_name_lower_no_domain", "accounts", "lower(name)", "coalesce(domain, '') = ''"),
    ("ix_contacts_email_lower", "contacts", "lower(email)", None),
    ("ix_contacts_phone_no_email", "contacts", "phone", "coalesce(email, '') = ''"),
)


def _schema() -> str | None:
    # SQLite has no schemas (state.db maps both onto the main database), and ALTER TABLE
    # is not covered by the engine's schema translation
    return "crm" if op.get_bind().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    for table in ENTITY_TABLES:
        op.add_column(table, sa.Column(
            "provenance", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True), schema=schema)
    for name, table, expr, where in INDEXES:
        cond: dict[str, Any] = {} if where is None else {"postgresql_where": sa.text(where),
                                                         "sqlite_where": sa.text(where)}
        op.create_index(name, table, [sa.text(expr)], unique=False, schema=schema, **cond)


def downgrade() -> None:
    schema = _schema()
    for name, table, _expr, _where in INDEXES:
        op.drop_index(name, table_name=table, schema=schema)
    for table in ENTITY_TABLES:
        op.drop_column(table, "provenance", schema=schema)
