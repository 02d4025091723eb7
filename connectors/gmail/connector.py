"""Gmail connector: the messages of several mailboxes as email activities (stream `messages`).

Per mailbox: the first sync records the mailbox's `historyId` (getProfile) *before* listing, then
lists the look-back window (`messages.list`, `q=after:<epoch>`, 500 a page, ids only) and fetches
each page's messages with `format=metadata` (headers only) over a bounded pool of requests. Later
syncs read `history.list` from the stored id (`messageAdded`, `messageDeleted`): added messages are
fetched the same way, permanent deletes are reported as `Page.deleted`. A start id Gmail no longer
keeps answers 404: `CursorExpired`, and the engine records a full resync. An incremental sync with
nothing new costs one request per mailbox.

Cursor (opaque to the engine)::

    {"mailboxes": {"<address>": {"phase": "full", "history_id": "<id>", "after": <epoch s>,
                                 "page_token": <token|None>, "pages": n}
                              | {"phase": "history", "history_id": "<id>"}}}

Mid-history the stored id is the last history record the page covered (records come in order), so a
resume needs no page token. External ids are `<mailbox>:<gmail id>` (Gmail ids are per mailbox).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.gmail.google_api import account_auth, account_secrets, check, json_object
from connectors.gmail.messages import METADATA_HEADERS, snippet_text, to_activity
from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    Redactor,
    RejectedRecord,
    StreamSpec,
    build_client,
)
from hub.sdk.activity import ActivityConnectorConfig
from hub.sdk.oauth import OAuth2Settings

__all__ = ["GmailConfig", "GmailConnector", "Mailbox"]

PAGE_MAX = 500  # messages.list and history.list maxResults cap (discovery document)
STREAM = "messages"
SKIPPED_LABELS = frozenset({"DRAFT", "SPAM"})  # not mail anyone exchanged


class Mailbox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(description="the mailbox's address")
    #: a fixed OAuth access token (gmail.readonly); without one, the instance's `oauth` client gets them
    access_token: SecretStr | None = None


class GmailConfig(ActivityConnectorConfig):
    base_url: str = "https://gmail.googleapis.com"
    mailboxes: list[Mailbox] = Field(min_length=1)
    #: the OAuth client: `authorization_code` (one login per mailbox, `--subject <address>`) or
    #: `jwt_bearer` (a Workspace service account with domain-wide delegation; `sub` = each mailbox)
    oauth: OAuth2Settings | None = None
    #: how far back the first sync (and a full resync) reaches
    lookback_days: int = Field(90, ge=1)
    page_size: int = Field(PAGE_MAX, ge=1, le=PAGE_MAX)
    #: messages.get requests in flight at once per page (Gmail: 250 quota units/s per user, get = 5)
    fetch_concurrency: int = Field(8, ge=1, le=50)
    requests_per_second: float | None = Field(None, gt=0)
    timeout_seconds: float = 30.0

    @field_validator("mailboxes")
    @classmethod
    def _distinct(cls, value: list[Mailbox]) -> list[Mailbox]:
        seen: set[str] = set()
        for m in value:
            if m.address.lower() in seen:
                raise ValueError(f"mailbox {m.address!r} is listed twice")
            seen.add(m.address.lower())
        return value

    @model_validator(mode="after")
    def _mailboxes_are_internal(self) -> GmailConfig:
        if self.oauth is None:
            bare = [m.address for m in self.mailboxes if m.access_token is None]
            if bare:
                raise ValueError(f"mailboxes {', '.join(bare)} have no access_token. Fix: give each an "
                                 "access_token, or configure `oauth` (authorization_code or a service account)")
        # the synced mailboxes are the team's own: the hub must never make contacts of them
        known = {i.lower() for i in self.internal}
        self.internal = [*self.internal, *(m.address for m in self.mailboxes if m.address.lower() not in known)]
        return self


class GmailConnector(Connector):
    kind = "gmail"
    Config = GmailConfig
    # per-user quota 6,000 units/min (projects from May 2026): ~20 messages.get a second
    default_rate: ClassVar[float | None] = 20.0
    default_burst: ClassVar[int] = 20

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, GmailConfig)
        self.cfg: GmailConfig = config
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._auths: dict[str, httpx.Auth] | None = None
        self._internal = frozenset(a.lower() for a in config.internal)
        self._secrets = account_secrets([m.access_token for m in config.mailboxes], config.oauth)
        self._redactor = Redactor(self._secrets)

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=STREAM, target="activity", primary_key="id", cursor_kind=CursorKind.HISTORY_ID,
                           reports_deletes=True)]

    def _auth(self, address: str) -> httpx.Auth:
        if self._auths is None:
            self._auths = {m.address.lower(): account_auth(m.address, m.access_token, self.cfg.oauth,
                                                             self.context) for m in self.cfg.mailboxes}
        return self._auths[address.lower()]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            self._client = build_client(
                base_url=self.cfg.base_url, timeout=self.cfg.timeout_seconds, budget=self.context.budget,
                secrets=self._secrets,
                transport=self.context.transport, **kwargs)
        return self._client

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None
        for auth in (self._auths or {}).values():
            closer = getattr(auth, "close", None)  # an OAuth auth holds a client for the token endpoint
            if closer is not None:
                closer()
        self._auths = None

    # -- HTTP ------------------------------------------------------------------------------------
    def _get(self, mailbox: str, path: str, params: Any = None, *, expired_status: int | None = None,
             missing_ok: bool = False) -> dict[str, Any] | None:
        resp = self.client.get(f"/gmail/v1/users/me/{path}", params=params, auth=self._auth(mailbox))
        if missing_ok and resp.status_code == 404:
            return None
        check(resp, self._redactor, expired_status=expired_status, what=f"history id of {mailbox}")
        return json_object(resp, self._redactor, "Gmail")

    def _fetch(self, mailbox: str, ids: list[str]) -> list[dict[str, Any] | None]:
        """Message metadata for `ids`, in order; None for one deleted since it was listed."""
        params = [("format", "metadata"), *(("metadataHeaders", h) for h in METADATA_HEADERS)]

        def one(mid: str) -> dict[str, Any] | None:
            return self._get(mailbox, f"messages/{mid}", params, missing_ok=True)

        if len(ids) <= 1 or self.cfg.fetch_concurrency == 1:
            return [one(i) for i in ids]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.cfg.fetch_concurrency, thread_name_prefix=f"gmail-{self.name}")
        return list(self._pool.map(one, ids))

    def check(self) -> str:
        found = [str((self._get(m.address, "profile") or {}).get("emailAddress")) for m in self.cfg.mailboxes]
        return f"tokens accepted for {', '.join(found)}"

    # -- reading ---------------------------------------------------------------------------------
    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream != STREAM:
            raise FatalError(f"gmail has no stream {stream!r} (it has: {STREAM})")
        old = (cursor or {}).get("mailboxes") or {}
        # mailboxes removed from the config drop out of the cursor; new ones start with a full sync
        state: dict[str, Any] = {m.address.lower(): old.get(m.address.lower()) for m in self.cfg.mailboxes}
        for box in self.cfg.mailboxes:
            key = box.address.lower()
            extra = 0
            if state[key] is None:
                profile = self._get(box.address, "profile") or {}
                after = int(time.time()) - self.cfg.lookback_days * 86_400
                state[key] = {"phase": "full", "history_id": str(profile["historyId"]), "after": after,
                              "page_token": None, "pages": 0}
                extra = 1
            if state[key]["phase"] == "full":
                for page in self._read_full(box.address, state, extra):
                    extra = 0
                    yield page
            yield from self._read_history(box.address, state, extra)

    def _cursor(self, state: dict[str, Any]) -> Cursor:
        return {"mailboxes": {k: dict(v) for k, v in state.items() if v is not None}}

    def _read_full(self, mailbox: str, state: dict[str, Any], extra: int) -> Iterator[Page]:
        key = mailbox.lower()
        while True:
            s = state[key]
            params: dict[str, Any] = {"maxResults": self.cfg.page_size, "q": f"after:{s['after']}",
                                      "includeSpamTrash": "false"}
            if s.get("page_token"):
                params["pageToken"] = s["page_token"]
            data = self._get(mailbox, "messages", params) or {}
            ids = [str(m["id"]) for m in data.get("messages") or [] if isinstance(m, dict) and m.get("id")]
            token = data.get("nextPageToken")
            if token:
                state[key] = {**s, "page_token": token, "pages": int(s.get("pages", 0)) + 1}
            else:  # the listing is done: history takes over from the id recorded before it began
                state[key] = {"phase": "history", "history_id": s["history_id"]}
            page = self._page(mailbox, ids, [], state, requests=1 + extra)
            extra = 0
            yield page
            if not token:
                return

    def _read_history(self, mailbox: str, state: dict[str, Any], extra: int) -> Iterator[Page]:
        key = mailbox.lower()
        start = str(state[key]["history_id"])
        token: str | None = None
        while True:
            params: list[tuple[str, Any]] = [("startHistoryId", start), ("maxResults", self.cfg.page_size),
                                             ("historyTypes", "messageAdded"), ("historyTypes", "messageDeleted")]
            if token:
                params.append(("pageToken", token))
            data = self._get(mailbox, "history", params, expired_status=404) or {}
            added: dict[str, None] = {}
            deleted: dict[str, None] = {}
            last = None
            for h in data.get("history") or []:
                last = h.get("id", last)
                for item in h.get("messagesAdded") or []:
                    msg = item.get("message") or {}
                    if msg.get("id") and not SKIPPED_LABELS & set(msg.get("labelIds") or []):
                        added[str(msg["id"])] = None
                        deleted.pop(str(msg["id"]), None)
                for item in h.get("messagesDeleted") or []:
                    mid = str((item.get("message") or {}).get("id") or "")
                    if mid:
                        added.pop(mid, None)  # added and gone within the page: only the delete counts
                        deleted[mid] = None
            token = data.get("nextPageToken")
            if token:
                state[key] = {"phase": "history", "history_id": str(last) if last is not None else start}
            else:
                state[key] = {"phase": "history", "history_id": str(data.get("historyId") or last or start)}
            page = self._page(mailbox, list(added), list(deleted), state, requests=1 + extra)
            extra = 0
            yield page
            if not token:
                return

    def _page(self, mailbox: str, ids: list[str], deleted: list[str], state: dict[str, Any], requests: int) -> Page:
        page = Page(next_cursor=self._cursor(state), requests=requests + len(ids),
                    deleted=[f"{mailbox.lower()}:{d}" for d in deleted])
        for mid, msg in zip(ids, self._fetch(mailbox, ids), strict=True):
            ext = f"{mailbox.lower()}:{mid}"
            if msg is None:  # deleted between the listing and the fetch
                page.deleted.append(ext)
                continue
            if SKIPPED_LABELS & set(msg.get("labelIds") or []):
                continue
            raw = msg if self.cfg.body_excerpt_chars > 0 else {k: v for k, v in msg.items() if k != "snippet"}
            try:
                event = to_activity(msg, mailbox=mailbox, external_id=ext, internal=self._internal,
                                    excerpt=self.cfg.excerpt(snippet_text(msg)))
            except ValueError as exc:
                page.rejected.append(RejectedRecord(ext, raw, str(exc)))
                continue
            page.records.append(RawRecord(external_id=ext, updated_at=event.updated_at, data=raw, activity=event))
        return page
