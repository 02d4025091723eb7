"""Tables of the canonical store (`crm`) and of the hub's own state (`hub`).

One metadata for both backends. PostgreSQL keeps the two schemas apart; SQLite has
no schemas, so `state.db` maps both to the main database (no table name is shared
between them, which a test checks).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

CRM = "crm"
HUB = "hub"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: JSON everywhere; JSONB on PostgreSQL so it can be indexed and compared.
Json = JSON().with_variant(JSONB(), "postgresql")
#: A document the hub writes and reads whole, on every page of a sync (provenance, change-log
#: fields, activity versions): plain `json` on PostgreSQL, kept as the text sent. Nothing looks
#: inside it in SQL, and jsonb's parse on the way in and re-serialisation on the way out cost
#: ~18 and ~12 us per 1.2 KB provenance on this project's bench machine, against ~3 and ~0.
JsonDoc = JSON()
#: A 64-bit auto-increment key; SQLite only auto-increments INTEGER PRIMARY KEY.
SeqId = BigInteger().with_variant(Integer(), "sqlite")
Id = String(36)  # canonical ids: uuid4 hex strings, made by the hub so a page needs no round trip


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on both backends (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.utcoffset():
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UTCDateTime()


def _entity_columns() -> list[Column]:
    return [
        Column("owner_id", String(64)),
        Column("created_at", TS),
        Column("updated_at", TS),
        Column("archived_at", TS),
        Column("custom", Json),
        #: {field: [system, vendor_at, rule, hub_at, external_id]}: who set each value, when, why
        #: (hub.ownership, README "Provenance"); read and written with the row, in the same statement
        Column("provenance", JsonDoc),
    ]


accounts = Table(
    "accounts", metadata,
    Column("id", Id, primary_key=True),
    Column("name", Text),
    Column("domain", String(255)),
    Column("industry", Text),
    Column("segment", Text),
    *_entity_columns(),
    schema=CRM,
)
#: identity match keys (hub.identity): normalised domain, then name, compared lower-cased
Index("ix_accounts_domain_lower", func.lower(accounts.c.domain))
Index("ix_accounts_name_lower", func.lower(accounts.c.name))
#: the name match of a record whose domain found nothing only considers accounts without one
Index("ix_accounts_name_lower_no_domain", func.lower(accounts.c.name),
      postgresql_where=func.coalesce(accounts.c.domain, "") == "",
      sqlite_where=func.coalesce(accounts.c.domain, "") == "")

contacts = Table(
    "contacts", metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, index=True),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("email", String(320)),
    Column("phone", String(64), index=True),
    Column("title", Text),
    Column("lifecycle_stage", Text),
    *_entity_columns(),
    schema=CRM,
)
#: identity match keys (hub.identity): normalised email, then phone (its index above). Every
#: index is paid for on each insert and update of a sync, so there is no second one on email.
Index("ix_contacts_email_lower", func.lower(contacts.c.email))

leads = Table(
    "leads", metadata,
    Column("id", Id, primary_key=True),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("company", Text),
    Column("source", Text),
    Column("status", Text),
    Column("score", Numeric(12, 2)),
    *_entity_columns(),
    schema=CRM,
)
#: a lead is looked up by its email, compared lower-cased (hub.identity.lookup_key)
Index("ix_leads_email_lower", func.lower(leads.c.email))

opportunities = Table(
    "opportunities", metadata,
    Column("id", Id, primary_key=True),
    Column("account_id", Id, index=True),
    Column("name", Text),
    Column("pipeline", Text),
    Column("stage", Text),  # a string, never an enum: every pipeline names its own stages
    Column("amount", Numeric(18, 4)),
    Column("currency", String(3)),
    Column("close_date", Date),
    *_entity_columns(),
    schema=CRM,
)

activities = Table(
    "activities", metadata,
    Column("id", Id, primary_key=True),
    Column("type", String(64), nullable=False),
    Column("source", String(128), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("account_id", Id, index=True),
    Column("contact_id", Id, index=True),
    Column("opportunity_id", Id, index=True),
    Column("actor_id", String(64)),
    Column("occurred_at", TS, nullable=False),
    Column("payload", JsonDoc),
    Column("recorded_at", TS, nullable=False),
    # the activity-ingest fields (hub.sdk.activity.ActivityEvent); the row is the latest version,
    # every version (the first included) is kept in hub.activity_versions
    Column("ended_at", TS),
    Column("direction", String(16)),  # inbound, outbound, internal
    Column("subject", Text),
    Column("status", String(32)),  # sent, scheduled, cancelled, missed, completed, ...
    Column("url", Text),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("vendor_updated_at", TS),  # the vendor-side time of the version the row holds
    #: the item's identity across vendors (an email's RFC 822 Message-ID): the same mail read
    #: through another connector (a mailbox moved from Gmail to Microsoft 365) is not added twice
    Column("dedupe_key", String(255), index=True),
    UniqueConstraint("source", "external_id"),
    schema=CRM,
)

#: Who an activity involves. A participant that matches no contact keeps contact_id NULL and
#: is matched again when a contact with that address or number appears (`activities relink`).
activity_participants = Table(
    "activity_participants", metadata,
    Column("activity_id", Id, nullable=False, index=True),
    Column("role", String(16), nullable=False),  # from, to, cc, bcc, organizer, attendee, caller, callee, agent
    Column("email", String(320)),  # normalised (lower case)
    Column("phone", String(32)),  # E.164
    Column("user_id", String(128)),  # the vendor's user id
    Column("name", Text),
    Column("response", String(32)),  # an attendee's answer: accepted, declined, tentative, needsAction
    Column("contact_id", Id, index=True),
    Column("internal", Boolean, nullable=False, server_default=false()),  # an internal user, never a contact
    Index("ix_activity_participants_unmatched_email", "email",
          postgresql_where=text("contact_id IS NULL"), sqlite_where=text("contact_id IS NULL")),
    Index("ix_activity_participants_unmatched_phone", "phone",
          postgresql_where=text("contact_id IS NULL"), sqlite_where=text("contact_id IS NULL")),
    schema=CRM,
)

#: entity name -> table; the names are those of ownership rules and the change log.
ENTITY_TABLES: dict[str, Table] = {
    "account": accounts,
    "contact": contacts,
    "lead": leads,
    "opportunity": opportunities,
}

external_links = Table(
    "external_links", metadata,
    Column("connector", String(128), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("entity_id", Id, nullable=False),
    Column("stream", String(128)),
    Column("linked_at", TS, nullable=False),
    Column("deleted_at", TS),
    PrimaryKeyConstraint("connector", "entity", "external_id"),
    Index("ix_external_links_entity_entity_id", "entity", "entity_id"),
    schema=HUB,
)

cursors = Table(
    "cursors", metadata,
    Column("connector", String(128), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("cursor", Json),
    Column("updated_at", TS, nullable=False),
    PrimaryKeyConstraint("connector", "stream"),
    schema=HUB,
)

sync_runs = Table(
    "sync_runs", metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("connector", String(128), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # running, ok, failed, busy
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("full_resync", Boolean, nullable=False, default=False),
    Column("resync_reason", Text),
    Column("read", Integer, nullable=False, default=0),
    Column("written", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("requests", Integer, nullable=False, default=0),
    Column("pages", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("worker", String(128)),
    Index("ix_sync_runs_connector_stream_id", "connector", "stream", "id"),
    schema=HUB,
)

retry_queue = Table(
    "retry_queue", metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("connector", String(128), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("payload", Json),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=1),
    Column("first_failed_at", TS, nullable=False),
    Column("last_failed_at", TS, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("dead", Boolean, nullable=False, default=False),
    UniqueConstraint("connector", "stream", "external_id"),
    schema=HUB,
)

leases = Table(
    "leases", metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("acquired_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    schema=HUB,
)

rate_budgets = Table(
    "rate_budgets", metadata,
    Column("connector", String(128), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # epoch seconds: portable arithmetic
    Column("paused_until", Float, nullable=False, default=0.0),
    schema=HUB,
)

change_log = Table(
    "change_log", metadata,
    Column("seq", SeqId, primary_key=True, autoincrement=True),
    Column("entity", String(64), nullable=False),
    Column("entity_id", Id, nullable=False),
    Column("op", String(16), nullable=False),  # create, update, archive, unlink
    Column("source", String(128), nullable=False),
    Column("fields", JsonDoc),  # {field: [old, new]}
    Column("vendor_at", TS),
    Column("at", TS, nullable=False),
    Column("run_id", BigInteger),
    Index("ix_change_log_entity_entity_id", "entity", "entity_id"),
    schema=HUB,
)

#: Raw webhook deliveries, stored before they are acknowledged (hub.webhooks). One row
#: per vendor event; (connector, event_id) is unique, so a redelivery is stored once.
webhook_inbox = Table(
    "webhook_inbox", metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("connector", String(128), nullable=False),
    Column("event_id", String(255), nullable=False),  # the vendor's id, else "sha256:<hex of body>"
    Column("received_at", TS, nullable=False),
    Column("headers", Json),  # an allow-listed subset: never signatures or credentials
    Column("body", Json, nullable=False),
    Column("status", String(16), nullable=False),  # pending, failed (will retry), dead, done
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text),
    Column("worker", String(128)),  # the worker that claimed it last
    Column("processed_at", TS),
    UniqueConstraint("connector", "event_id"),
    Index("ix_webhook_inbox_status_id", "status", "id"),
    schema=HUB,
)

#: Every version of every activity, append-only: a vendor-side change (a meeting moved, a call
#: ended) is a new version here and the activity row shows the latest by vendor time.
activity_versions = Table(
    "activity_versions", metadata,
    Column("source", String(128), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("vendor_updated_at", TS),
    Column("recorded_at", TS, nullable=False),
    Column("applied", Boolean, nullable=False),  # False: older than the row's version (arrived out of order)
    Column("data", JsonDoc, nullable=False),  # the event as ingested
    Column("digest", String(64), nullable=False),  # sha256 of `data`: a redelivery is recognised
    PrimaryKeyConstraint("source", "external_id", "version"),
    schema=HUB,
)

#: Lead routing's round robin (hub.routing): the next position per team, shared by every worker.
routing_state = Table(
    "routing_state", metadata,
    Column("team", String(128), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False),
    schema=HUB,
)

#: OAuth2 grants per connector instance (hub.auth): the token set encrypted at rest
#: (Fernet, key from CRMHUB_SECRET_KEY), never in clear text; a refresh that the vendor
#: refuses (invalid_grant) marks the instance as needing re-authorisation.
oauth_tokens = Table(
    "oauth_tokens", metadata,
    Column("connector", String(128), nullable=False),
    Column("subject", String(320), nullable=False, server_default=""),  # a mailbox, a user; "" for the instance
    Column("token_encrypted", Text),
    Column("expires_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),  # rotation is compare-and-set on this
    Column("needs_reauth", Boolean, nullable=False, server_default=false()),
    Column("reauth_reason", Text),
    PrimaryKeyConstraint("connector", "subject"),
    schema=HUB,
)

#: Waves of a migration from a legacy source (hub.migrate): a named, persisted selection and its
#: progress. The definition (root stream, `where` or ids file) is stored as run, so `status`
#: and `verify` speak of what was migrated even after crmhub.yaml changes.
migration_waves = Table(
    "migration_waves", metadata,
    Column("name", String(128), primary_key=True),
    Column("source", String(128), nullable=False),
    Column("root", String(128), nullable=False),
    Column("definition", Json, nullable=False),
    Column("state", String(16), nullable=False),  # planned, running, migrated, rolled_back, cut_over
    Column("pass_no", Integer, nullable=False, server_default="0"),  # fresh runs and deltas, for duplicate ids
    Column("last_run_at", TS),
    Column("last_run", Json),  # the last run's report: counts per stream, rejects
    Column("last_verified_at", TS),
    Column("last_verify_ok", Boolean),
    Column("last_verify", Json),
    Column("cutover_at", TS),
    Column("updated_at", TS, nullable=False),
    schema=HUB,
)

#: The id crosswalk: every legacy record a wave wrote, once (a record belongs to one wave), with
#: its canonical id, what the wave did to it, and a checksum of the mapped fields as stored.
migration_items = Table(
    "migration_items", metadata,
    Column("source", String(128), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("legacy_id", String(255), nullable=False),
    Column("wave", String(128), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("entity_id", Id, nullable=False),
    Column("action", String(16), nullable=False),  # created, matched (identity), updated (linked before)
    Column("checksum", String(32), nullable=False),
    Column("pass_no", Integer, nullable=False),
    Column("written_at", TS, nullable=False),
    #: a legacy delete `migrate delta` applied (the record unlinked, archived by the rules); the
    #: action stays, so a rollback still knows what the wave did. Cleared if the record comes back.
    Column("deleted_at", TS),
    PrimaryKeyConstraint("source", "stream", "legacy_id"),
    Index("ix_migration_items_wave_stream", "wave", "stream"),
    Index("ix_migration_items_entity_entity_id", "entity", "entity_id"),
    schema=HUB,
)

#: Rows a wave could not use, with their reason (the run went on without them).
migration_rejects = Table(
    "migration_rejects", metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("wave", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("legacy_id", String(255)),
    Column("reason", Text, nullable=False),
    Column("payload", Json),
    Column("pass_no", Integer, nullable=False),
    Column("at", TS, nullable=False),
    Index("ix_migration_rejects_wave_stream", "wave", "stream"),
    schema=HUB,
)
