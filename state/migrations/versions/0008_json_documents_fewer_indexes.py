"""documents read whole are plain json; no index a sync pays for and nothing uses

Revision ID: 0008
Revises: 0007

PostgreSQL only, for the types: provenance (the entity tables and custom objects'),
hub.change_log.fields, crm.activities.payload and hub.activity_versions.data become `json`
(state.schema.JsonDoc): the hub writes and reads them whole on every page of a sync, and
jsonb's parse in and re-serialisation out cost more than the rest of the row.

Both backends, for the indexes: contacts.email and accounts.domain are only ever compared
lower-cased (hub.identity), through their `lower()` indexes; the partial phone index of contacts
without an email is served by the phone index. Leads get the `lower(email)` index their look-up
uses instead of a plain one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DOCUMENTS = (("crm", "accounts", "provenance"), ("crm", "contacts", "provenance"), ("crm", "leads", "provenance"),
             ("crm", "opportunities", "provenance"), ("hub", "change_log", "fields"), ("crm", "activities", "payload"),
             ("hub", "activity_versions", "data"))
CUSTOM_PREFIX = "obj_"  # state.custom.PREFIX


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _documents() -> list[tuple[str, str, str]]:
    custom = op.get_bind().execute(sa.text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'crm' "
        "AND column_name = 'provenance' AND table_name LIKE :p"), {"p": CUSTOM_PREFIX + "%"}).scalars()
    return [*DOCUMENTS, *(("crm", t, "provenance") for t in custom)]


def upgrade() -> None:
    pg = _pg()
    crm = "crm" if pg else None
    if pg:
        for schema, table, column in _documents():
            op.execute(f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} TYPE json USING {column}::json")
    op.drop_index("ix_contacts_email", table_name="contacts", schema=crm)
    op.drop_index("ix_contacts_phone_no_email", table_name="contacts", schema=crm)
    op.drop_index("ix_accounts_domain", table_name="accounts", schema=crm)
    op.drop_index("ix_leads_email", table_name="leads", schema=crm)
    op.create_index("ix_leads_email_lower", "leads", [sa.text("lower(email)")], unique=False, schema=crm)


def downgrade() -> None:
    pg = _pg()
    crm = "crm" if pg else None
    op.drop_index("ix_leads_email_lower", table_name="leads", schema=crm)
    op.create_index("ix_leads_email", "leads", ["email"], unique=False, schema=crm)
    op.create_index("ix_accounts_domain", "accounts", ["domain"], unique=False, schema=crm)
    where = sa.text("coalesce(email, '') = ''")
    op.create_index("ix_contacts_phone_no_email", "contacts", ["phone"], unique=False, schema=crm,
                    postgresql_where=where, sqlite_where=where)
    op.create_index("ix_contacts_email", "contacts", ["email"], unique=False, schema=crm)
    if pg:
        for schema, table, column in _documents():
            op.execute(f"ALTER TABLE {schema}.{table} ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb")
