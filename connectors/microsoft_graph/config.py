"""Config of a Microsoft Graph instance, and the one place its HTTP auth is built.

    connectors:
      m365:
        kind: microsoft_graph
        auth: {token: "${GRAPH_TOKEN}"}                 # a bearer token (delegated or app-only)
        mailboxes: [ann@contoso.com, bob@contoso.com]   # /users/{mailbox}; `me` for a delegated token
        mail_folders: [inbox, sentitems]                # well-known folder names (or folder ids)
        body_excerpt_chars: 0                           # metadata only (the default)

Application permissions (no person; `/users/{mailbox}` paths), through `hub.sdk.oauth`::

        auth:
          grant: client_credentials
          client_id: "${GRAPH_CLIENT_ID}"
          client_secret: "${GRAPH_CLIENT_SECRET}"
          token_url: https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token
          scopes: [https://graph.microsoft.com/.default]

Delegated (`grant: authorization_code`, `authorize_url: .../oauth2/v2.0/authorize`, scopes
`offline_access Mail.Read Calendars.Read`): `crmhub auth login <instance>` once, then refreshed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub.sdk.activity import ActivityConnectorConfig
from hub.sdk.connector import ConnectorContext
from hub.sdk.oauth import OAuth2Settings, oauth_auth

__all__ = ["GraphAuth", "Mailbox", "MicrosoftGraphConfig", "build_auth"]

#: Graph's documented default page is 10 items; the `Prefer: odata.maxpagesize` ceiling for
#: Outlook delta is not documented [U]; list endpoints document `$top` up to 1,000.
DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000
WELL_KNOWN_FOLDERS = frozenset({"inbox", "sentitems", "archive", "deleteditems", "drafts", "junkemail",
                                "outbox", "clutter", "conversationhistory", "scheduled", "msgfolderroot"})


class GraphAuth(BaseModel):
    """A static bearer token (delegated or app-only), e.g. for a quick check or a test tenant."""

    model_config = ConfigDict(extra="forbid")
    token: SecretStr = Field(description="OAuth 2.0 access token for https://graph.microsoft.com")


class Mailbox(BaseModel):
    """One mailbox: `id` goes in the path (`me`, a user id or a UPN); `address` is its mail
    address, which tells a sent mail from a received one. A bare string is both."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    address: str | None = None

    @model_validator(mode="after")
    def _address_of_upn(self) -> Mailbox:
        if self.address is None and "@" in self.id:
            self.address = self.id
        if self.address is None:
            raise ValueError(f"mailbox {self.id!r} needs `address:` (its mail address, to tell sent "
                             f"from received mail). Fix: {{id: {self.id}, address: you@example.com}}")
        return self


class MicrosoftGraphConfig(ActivityConnectorConfig):
    base_url: str = "https://graph.microsoft.com/v1.0"
    auth: GraphAuth | OAuth2Settings
    mailboxes: list[Mailbox] = Field(min_length=1)
    mail_folders: list[str] = Field(default_factory=lambda: ["inbox", "sentitems"], min_length=1)
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    #: the calendarView window is fixed when a round starts: this far back and ahead of now ...
    calendar_past_days: int = Field(90, ge=0)
    calendar_future_days: int = Field(180, ge=1)
    #: ... and started again (a new round, re-reading the window) once it has slid this far
    calendar_rewindow_days: int = Field(30, ge=1)
    #: a fixed window instead (ISO-8601), for backfills and tests
    calendar_start: datetime | None = None
    calendar_end: datetime | None = None
    #: requests per second for this instance; Outlook allows 10,000 per 10 min per mailbox
    requests_per_second: float | None = Field(None, gt=0)
    timeout_seconds: float = 30.0

    @field_validator("mailboxes", mode="before")
    @classmethod
    def _bare_mailboxes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("mail_folders")
    @classmethod
    def _folders(cls, value: list[str]) -> list[str]:
        seen = [v.strip() for v in value]
        if any(not v for v in seen) or len(set(seen)) != len(seen):
            raise ValueError("mail_folders must be distinct, non-empty folder names (e.g. inbox, sentitems)")
        return seen

    @model_validator(mode="after")
    def _window(self) -> MicrosoftGraphConfig:
        if (self.calendar_start is None) != (self.calendar_end is None):
            raise ValueError("calendar_start and calendar_end go together")
        if self.calendar_start and self.calendar_end and self.calendar_end <= self.calendar_start:
            raise ValueError("calendar_end must be after calendar_start")
        ids = [m.id.lower() for m in self.mailboxes]
        if len(set(ids)) != len(ids):
            raise ValueError("mailboxes repeat")
        return self


def build_auth(cfg: MicrosoftGraphConfig, context: ConnectorContext
               ) -> tuple[dict[str, str], list[str], httpx.Auth | None]:
    """(headers, secrets to redact, httpx auth) for this instance: the one place auth is built.

    OAuth (client credentials, or delegated with refresh) is `hub.sdk.oauth`'s `httpx.Auth`:
    it fetches and renews the token and retries a 401 once; a static token is a header.
    """
    if isinstance(cfg.auth, OAuth2Settings):
        return {}, cfg.auth.secrets(), oauth_auth(cfg.auth, context)
    token = cfg.auth.token.get_secret_value()
    return {"Authorization": f"Bearer {token}"}, [token], None
