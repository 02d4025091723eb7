"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 07:55:16.161092
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('domain', sa.String(length=255), nullable=True),
    sa.Column('industry', sa.Text(), nullable=True),
    sa.Column('segment', sa.Text(), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    schema='crm'
    )
    op.create_index(op.f('ix_accounts_domain'), 'accounts', ['domain'], unique=False, schema='crm')
    op.create_table('activities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('contact_id', sa.String(length=36), nullable=True),
    sa.Column('opportunity_id', sa.String(length=36), nullable=True),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activities')),
    sa.UniqueConstraint('source', 'external_id', name=op.f('uq_activities_source_external_id')),
    schema='crm'
    )
    op.create_index(op.f('ix_activities_account_id'), 'activities', ['account_id'], unique=False, schema='crm')
    op.create_index(op.f('ix_activities_contact_id'), 'activities', ['contact_id'], unique=False, schema='crm')
    op.create_index(op.f('ix_activities_opportunity_id'), 'activities', ['opportunity_id'], unique=False, schema='crm')
    op.create_table('contacts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('first_name', sa.Text(), nullable=True),
    sa.Column('last_name', sa.Text(), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=64), nullable=True),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('lifecycle_stage', sa.Text(), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    schema='crm'
    )
    op.create_index(op.f('ix_contacts_account_id'), 'contacts', ['account_id'], unique=False, schema='crm')
    op.create_index(op.f('ix_contacts_email'), 'contacts', ['email'], unique=False, schema='crm')
    op.create_index(op.f('ix_contacts_phone'), 'contacts', ['phone'], unique=False, schema='crm')
    op.create_table('leads',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('first_name', sa.Text(), nullable=True),
    sa.Column('last_name', sa.Text(), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=64), nullable=True),
    sa.Column('company', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('score', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads')),
    schema='crm'
    )
    op.create_index(op.f('ix_leads_email'), 'leads', ['email'], unique=False, schema='crm')
    op.create_table('opportunities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('pipeline', sa.Text(), nullable=True),
    sa.Column('stage', sa.Text(), nullable=True),
    sa.Column('amount', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('close_date', sa.Date(), nullable=True),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_opportunities')),
    schema='crm'
    )
    op.create_index(op.f('ix_opportunities_account_id'), 'opportunities', ['account_id'], unique=False, schema='crm')
    op.create_table('change_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('entity', sa.String(length=64), nullable=False),
    sa.Column('entity_id', sa.String(length=36), nullable=False),
    sa.Column('op', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('fields', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('vendor_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_change_log')),
    schema='hub'
    )
    op.create_index('ix_change_log_entity_entity_id', 'change_log', ['entity', 'entity_id'], unique=False, schema='hub')
    op.create_table('cursors',
    sa.Column('connector', sa.String(length=128), nullable=False),
    sa.Column('stream', sa.String(length=128), nullable=False),
    sa.Column('cursor', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('connector', 'stream', name=op.f('pk_cursors')),
    schema='hub'
    )
    op.create_table('external_links',
    sa.Column('connector', sa.String(length=128), nullable=False),
    sa.Column('entity', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('entity_id', sa.String(length=36), nullable=False),
    sa.Column('stream', sa.String(length=128), nullable=True),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('connector', 'entity', 'external_id', name=op.f('pk_external_links')),
    schema='hub'
    )
    op.create_index('ix_external_links_entity_entity_id', 'external_links', ['entity', 'entity_id'], unique=False, schema='hub')
    op.create_table('leases',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases')),
    schema='hub'
    )
    op.create_table('retry_queue',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('connector', sa.String(length=128), nullable=False),
    sa.Column('stream', sa.String(length=128), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('first_failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dead', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retry_queue')),
    sa.UniqueConstraint('connector', 'stream', 'external_id', name=op.f('uq_retry_queue_connector_stream_external_id')),
    schema='hub'
    )
    op.create_table('sync_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('connector', sa.String(length=128), nullable=False),
    sa.Column('stream', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('full_resync', sa.Boolean(), nullable=False),
    sa.Column('resync_reason', sa.Text(), nullable=True),
    sa.Column('read', sa.Integer(), nullable=False),
    sa.Column('written', sa.Integer(), nullable=False),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('pages', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_runs')),
    schema='hub'
    )
    op.create_index('ix_sync_runs_connector_stream_id', 'sync_runs', ['connector', 'stream', 'id'], unique=False, schema='hub')


def downgrade() -> None:
    op.drop_index('ix_sync_runs_connector_stream_id', table_name='sync_runs', schema='hub')
    op.drop_table('sync_runs', schema='hub')
    op.drop_table('retry_queue', schema='hub')
    op.drop_table('leases', schema='hub')
    op.drop_index('ix_external_links_entity_entity_id', table_name='external_links', schema='hub')
    op.drop_table('external_links', schema='hub')
    op.drop_table('cursors', schema='hub')
    op.drop_index('ix_change_log_entity_entity_id', table_name='change_log', schema='hub')
    op.drop_table('change_log', schema='hub')
    op.drop_index(op.f('ix_opportunities_account_id'), table_name='opportunities', schema='crm')
    op.drop_table('opportunities', schema='crm')
    op.drop_index(op.f('ix_leads_email'), table_name='leads', schema='crm')
    op.drop_table('leads', schema='crm')
    op.drop_index(op.f('ix_contacts_phone'), table_name='contacts', schema='crm')
    op.drop_index(op.f('ix_contacts_email'), table_name='contacts', schema='crm')
    op.drop_index(op.f('ix_contacts_account_id'), table_name='contacts', schema='crm')
    op.drop_table('contacts', schema='crm')
    op.drop_index(op.f('ix_activities_opportunity_id'), table_name='activities', schema='crm')
    op.drop_index(op.f('ix_activities_contact_id'), table_name='activities', schema='crm')
    op.drop_index(op.f('ix_activities_account_id'), table_name='activities', schema='crm')
    op.drop_table('activities', schema='crm')
    op.drop_index(op.f('ix_accounts_domain'), table_name='accounts', schema='crm')
    op.drop_table('accounts', schema='crm')
