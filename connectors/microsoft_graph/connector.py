"""Microsoft Graph connector: Outlook mail and calendar of several mailboxes, as activities.

Streams (both land on the activity timeline, both report deletes):

- `messages`: `GET /users/{mailbox}/mailFolders/{folder}/messages/delta` per mailbox and folder
  (Inbox and Sent Items by default), `$select` of the metadata fields only.
- `events`: `GET /users/{mailbox}/calendarView/delta?startDateTime=&endDateTime=` per mailbox;
  the window is fixed when a round starts, so a new round starts once it has slid
  `calendar_rewindow_days` (Graph's own advice for rolling windows).

A round follows `@odata.nextLink` (`$skiptoken`) page by page until a page carries
`@odata.deltaLink` (`$deltatoken`); the next run starts from that whole URL, whose token holds the
query. Cursor (opaque to the engine), one entry per mailbox and folder (or per mailbox)::

    {"delta": {key: deltaLink}, "next": {key: nextLink}, "window": {key: [start, end]}}

Every page is a checkpoint: a resume continues the round from its nextLink. A token Graph
rejects (410 Gone, `syncStateNotFound`, `resyncRequired`, `syncStateInvalid`) raises
`CursorExpired`: the engine records a full resync and reads every key again from the start.
`@removed` items are reported as deletes, except a message's with reason `changed` (documented
as soft-deleted or restorable, not gone): a mail that was sent or received stays a fact on the
timeline. Which reason a message moved out of a folder read here carries is not documented [U];
as `deleted` it is reported, since that is all Graph says of a hard delete too (moved into another
folder read here, it comes back live under the same immutable id). On the calendar `changed` is a
delete still: a meeting taken off the calendar is off. The calendar also
reports as removed events *outside* the window that changed, which carry only an id, so they
cannot be filtered here: a delete of an id the hub never stored is a no-op there. Graph may
replay an item, even within one response: a page keeps one version per id, the latest by
`lastModifiedDateTime`, and the hub keeps the latest version across pages (`updated_at`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx
import orjson

from connectors.microsoft_graph.config import MicrosoftGraphConfig, build_auth
from connectors.microsoft_graph.items import ItemError, event_activity, message_activity
from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorExpired,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    Redactor,
    RejectedRecord,
    StreamSpec,
    build_client,
    raise_for_status,
)

__all__ = ["EXPIRED_CODES", "MESSAGE_FIELDS", "MicrosoftGraphConnector"]

#: error codes with which Graph rejects a state token ([V] syncStateNotFound; [U] the others)
EXPIRED_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
#: what a mail activity needs, nothing more (bodyPreview only when an excerpt is allowed)
MESSAGE_FIELDS = ("from", "toRecipients", "ccRecipients", "bccRecipients", "subject", "sentDateTime",
                  "receivedDateTime", "internetMessageId", "webLink", "conversationId", "lastModifiedDateTime")
_BODY_KEYS = ("body", "uniqueBody")  # never kept: attachments and bodies are not stored


class MicrosoftGraphConnector(Connector):
    kind = "microsoft_graph"
    Config = MicrosoftGraphConfig
    # Outlook: 10,000 requests per 10 min per app per mailbox (~16.7/s) and 4 concurrent requests
    # per mailbox; an instance's mailboxes share one budget, so stay under one mailbox's share.
    default_rate: ClassVar[float | None] = 15.0
    default_burst: ClassVar[int] = 4

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, MicrosoftGraphConfig)
        self.cfg: MicrosoftGraphConfig = config
        self._client: httpx.Client | None = None
        self._base = self.cfg.base_url.rstrip("/")
        # the team's own addresses: the `internal` list and every mailbox read
        self._team = frozenset(a.strip().lower() for a in
                               (*self.cfg.internal, *(m.address for m in self.cfg.mailboxes if m.address)))

    # -- declaration -----------------------------------------------------------------------------

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=s, target="activity", primary_key="id", cursor_kind=CursorKind.DELTA_LINK,
                           reports_deletes=True) for s in ("messages", "events")]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers, secrets, auth = build_auth(self.cfg, self.context)
            kwargs: dict[str, Any] = {}
            if self.context.sleep is not None:
                kwargs["sleep"] = self.context.sleep
            self._client = build_client(base_url=self._base, headers=headers, auth=auth, secrets=secrets,
                                        timeout=self.cfg.timeout_seconds, budget=self.context.budget,
                                        transport=self.context.transport, **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _redactor(self) -> Redactor:
        found = getattr(self.client, "redactor", None)
        return found if isinstance(found, Redactor) else Redactor()

    # -- HTTP ------------------------------------------------------------------------------------

    def _prefer(self, calendar: bool) -> str:
        # Immutable ids: a message keeps its id when it moves between folders
        prefer = [f"odata.maxpagesize={self.cfg.page_size}", 'IdType="ImmutableId"']
        if calendar:
            prefer.append('outlook.timezone="UTC"')
        return ", ".join(prefer)

    def _get(self, url: str, *, calendar: bool, tokened: bool) -> dict[str, Any]:
        if not url.startswith(self._base + "/"):
            # a stored link goes to the vendor with our token: never anywhere else
            raise FatalError(f"{self.name}: a Graph link outside {self._base} was refused "
                             f"({self._redactor().redact_url(httpx.URL(url))})")
        resp = self.client.get(url, headers={"Prefer": self._prefer(calendar)})
        if resp.status_code == 410 or (tokened and 400 <= resp.status_code < 500 and self._expired(resp)):
            raise CursorExpired(f"Graph rejected the delta token ({resp.status_code} "
                                f"{self._error_code(resp) or resp.reason_phrase}); a full resync is needed")
        raise_for_status(resp, self._redactor())
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            text = self._redactor().redact(resp.text[:65536])[:200]
            raise FatalError(f"Graph answered {resp.status_code} with a body that is not JSON: {text!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("value", []), list):
            raise FatalError("Graph answered with JSON that is not a collection ({\"value\": [...]})")
        return data

    @staticmethod
    def _error_code(resp: httpx.Response) -> str | None:
        try:
            err = orjson.loads(resp.content).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        code = err.get("code") if isinstance(err, dict) else None
        return str(code) if code else None

    def _expired(self, resp: httpx.Response) -> bool:
        code = self._error_code(resp)
        return code is not None and code.lower() in EXPIRED_CODES

    def _user_path(self, mailbox_id: str) -> str:
        return "/me" if mailbox_id.lower() == "me" else f"/users/{quote(mailbox_id, safe='@')}"

    def check(self) -> str:
        first = self.cfg.mailboxes[0]
        url = f"{self._base}{self._user_path(first.id)}?$select=mail,userPrincipalName"
        resp = raise_for_status(self.client.get(url), self._redactor())
        who = orjson.loads(resp.content)
        return f"token accepted by {self._base} for {who.get('mail') or who.get('userPrincipalName') or first.id}"

    # -- reading ---------------------------------------------------------------------------------

    def _keys(self, stream: str) -> list[tuple[str, Any, str | None]]:
        """(cursor key, mailbox, folder) in reading order."""
        if stream == "messages":
            return [(f"{m.id}|{f}", m, f) for m in self.cfg.mailboxes for f in self.cfg.mail_folders]
        if stream == "events":
            return [(m.id, m, None) for m in self.cfg.mailboxes]
        raise FatalError(f"microsoft_graph has no stream {stream!r} (it has: messages, events)")

    def _window(self) -> tuple[str, str]:
        if self.cfg.calendar_start is not None and self.cfg.calendar_end is not None:
            start, end = self.cfg.calendar_start, self.cfg.calendar_end
        else:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start = today - timedelta(days=self.cfg.calendar_past_days)
            end = today + timedelta(days=self.cfg.calendar_future_days)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return start.astimezone(UTC).strftime(fmt), end.astimezone(UTC).strftime(fmt)

    def _stale(self, stored: Any, wanted: tuple[str, str]) -> bool:
        """Whether a calendar round's window should be started again."""
        if not isinstance(stored, list) or len(stored) != 2:
            return True
        if self.cfg.calendar_start is not None:
            return tuple(stored) != wanted
        slid = datetime.fromisoformat(wanted[0].replace("Z", "+00:00")) - \
            datetime.fromisoformat(str(stored[0]).replace("Z", "+00:00"))
        return slid >= timedelta(days=self.cfg.calendar_rewindow_days)

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        keys = self._keys(stream)
        calendar = stream == "events"
        c = self._checked(stream, cursor)
        wanted = self._window() if calendar else None
        for key, mailbox, folder in keys:
            url, tokened = c["next"].get(key), True
            if url is None:
                url = c["delta"].get(key)
                if wanted is not None and url is not None and self._stale(c["window"].get(key), wanted):
                    url = None  # a new round over the current window
            if url is None:
                tokened = False
                url = self._initial_url(mailbox.id, folder, wanted)
                if calendar and wanted is not None:
                    c["window"][key] = list(wanted)
            while True:
                data = self._get(url, calendar=calendar, tokened=tokened)
                next_link, delta_link = data.get("@odata.nextLink"), data.get("@odata.deltaLink")
                if next_link:
                    c["next"][key] = str(next_link)
                elif delta_link:
                    c["delta"][key] = str(delta_link)
                    c["next"].pop(key, None)
                else:
                    raise FatalError(f"Graph delta page for {key} has neither @odata.nextLink nor @odata.deltaLink")
                page = self._page(data.get("value") or [], mailbox.address, folder, calendar)
                page.next_cursor = {k: dict(v) for k, v in c.items()}
                yield page
                if not next_link:
                    break
                url, tokened = str(next_link), True

    def _checked(self, stream: str, cursor: Cursor | None) -> Cursor:
        """A copy of the stored cursor, or a clear error when it is not one this connector wrote."""
        c: Cursor = {"delta": {}, "next": {}, "window": {}}
        for part in c:
            value = (cursor or {}).get(part) or {}
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise FatalError(f"{self.name}.{stream}: the stored cursor's {part!r} is not a map of "
                                 f"mailbox keys (run `crmhub sync run {self.name}.{stream} --full` to start over)")
            c[part] = dict(value)
        return c

    def _initial_url(self, mailbox_id: str, folder: str | None, window: tuple[str, str] | None) -> str:
        user = self._user_path(mailbox_id)
        if folder is None:
            assert window is not None
            query = urlencode({"startDateTime": window[0], "endDateTime": window[1]})
            return f"{self._base}{user}/calendarView/delta?{query}"
        fields = [*MESSAGE_FIELDS, *(("bodyPreview",) if self.cfg.body_excerpt_chars > 0 else ())]
        return f"{self._base}{user}/mailFolders/{quote(folder, safe='')}/messages/delta?$select={','.join(fields)}"

    def _page(self, values: list[Any], mailbox: str | None, folder: str | None, calendar: bool) -> Page:
        page = Page()
        live: dict[str, dict[str, Any]] = {}
        removed: dict[str, None] = {}
        for item in values:
            if not isinstance(item, dict) or not item.get("id"):
                page.rejected.append(RejectedRecord(None, self._private(item), "Graph delta item without an id"))
                continue
            ext = str(item["id"])
            if "@removed" in item:
                if not calendar and _removed_reason(item) == "changed":
                    continue  # soft-deleted or restorable: the mail stays on the timeline
                live.pop(ext, None)
                removed[ext] = None
                continue
            removed.pop(ext, None)
            prev = live.get(ext)
            # a replay of an older version within one response never wins
            if prev is None or str(item.get("lastModifiedDateTime") or "") >= str(prev.get("lastModifiedDateTime") or ""):
                live[ext] = item
        for ext, item in live.items():
            excerpt = self.cfg.excerpt(item.get("bodyPreview"))
            data = self._private(item)
            try:
                if calendar:
                    activity = event_activity(item, mailbox=mailbox, excerpt=excerpt)
                else:
                    activity = message_activity(item, mailbox=mailbox, folder=folder or "", excerpt=excerpt,
                                                team=self._team)
            except ItemError as exc:
                page.rejected.append(RejectedRecord(ext, data, f"Graph {'event' if calendar else 'message'} "
                                                               f"{ext}: {exc}"))
                continue
            page.records.append(RawRecord(external_id=ext, updated_at=activity.updated_at, data=data,
                                          activity=activity))
        page.deleted = list(removed)
        return page

    def _private(self, item: Any) -> Any:
        """The raw item as the hub may keep it: no body, and the preview only when allowed."""
        if not isinstance(item, dict):
            return item
        drop = set(_BODY_KEYS) | (set() if self.cfg.body_excerpt_chars > 0 else {"bodyPreview"})
        return {k: v for k, v in item.items() if k not in drop}


def _removed_reason(item: dict[str, Any]) -> str:
    """`@removed`'s reason (`deleted` or `changed`), or "" when Graph gave none."""
    removed = item.get("@removed")
    return str(removed.get("reason") or "").lower() if isinstance(removed, dict) else ""
