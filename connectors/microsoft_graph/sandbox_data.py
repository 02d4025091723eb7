"""The Graph sandbox's data: mailboxes with folders of messages and a calendar of events, a
change sequence, and delta rounds computed from it.

Every change (add, update, delete) takes the next sequence number; an item remembers the number
of its last change and every earlier version (for replays). A delta round is a snapshot
`until` (the sequence when the round started) over a keyset by id, so a resume never skips an
item: an item changed while a round runs leaves that round and shows up in the next.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = ["GraphError", "GraphStore", "decode_token", "encode_token"]

WELL_KNOWN = ("inbox", "sentitems", "deleteditems", "archive", "drafts")
_FIRST = ("Ann", "Bob", "Chen", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lea")
_LAST = ("Lee", "Moss", "Ng", "Ortiz", "Park", "Quinn", "Rossi", "Sato", "Tran", "Ueda", "Vos", "Wahl")
_TOPICS = ("Renewal", "Pricing", "Onboarding", "Quarterly review", "Contract", "Demo", "Follow-up", "Invoice")


class GraphError(Exception):
    """An error Graph would answer with: status and `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise GraphError(400, "syncStateInvalid", "The sync state token is malformed.") from None
    if not isinstance(data, dict):
        raise GraphError(400, "syncStateInvalid", "The sync state token is malformed.")
    return data


def iso(t: datetime, graph_event: bool = False) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.0000000") if graph_event else t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Item:
    """One message or event: its versions (the last is current) and its last change's sequence."""

    id: str
    seq: int
    versions: list[dict[str, Any]]
    deleted: bool = False
    removed_reason: str = "deleted"  # what `@removed` says of it once deleted

    @property
    def current(self) -> dict[str, Any]:
        return self.versions[-1]


@dataclass
class Mailbox:
    address: str
    name: str
    folders: dict[str, str] = field(default_factory=dict)  # well-known name -> folder id
    items: dict[str, dict[str, Item]] = field(default_factory=dict)  # collection (folder id | "calendar") -> id -> item
    generation: int = 0  # tokens of an older generation are expired
    expire_code: str = "resyncRequired"


class GraphStore:
    """Mailboxes, their folders and calendars. Thread-safe through `lock`."""

    def __init__(self, mailboxes: Iterable[str] = ("ann@contoso.test",), messages: int = 30, events: int = 12,
                 seed: int = 7, base_time: datetime | None = None, bad_every: int = 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.seq = 0
        #: where the generated mail and meetings are placed in time
        self.base_time = (base_time or datetime.now(UTC)).replace(microsecond=0)
        #: `lastModifiedDateTime` is this clock, made strictly increasing (by a millisecond at least)
        self.clock = clock
        self._last = datetime.min.replace(tzinfo=UTC)
        self.mailboxes: dict[str, Mailbox] = {}
        self.faults: deque[tuple[int, float | None]] = deque()
        self.replays: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: dict[str, int] = {}
        self._n = 0
        self.bad_every = bad_every
        for address in mailboxes:
            self.add_mailbox(address)
        for mb in list(self.mailboxes.values()):
            for i in range(messages):
                other = self.person(i)
                at = self.base_time - timedelta(hours=3 * (messages - i))
                topic = _TOPICS[i % len(_TOPICS)]
                if i % 2 == 0:
                    self.deliver(mb.address, "inbox", sender=other, to=[(mb.address, mb.name)],
                                 subject=f"{topic} #{i}", sent_at=at, bad=bool(bad_every and (i + 1) % bad_every == 0))
                else:
                    self.deliver(mb.address, "sentitems", sender=(mb.address, mb.name), to=[other],
                                 cc=[self.person(i + 1)] if i % 3 == 0 else [], subject=f"Re: {topic} #{i}", sent_at=at)
            for i in range(events):
                start = (self.base_time + timedelta(days=i - events // 2)).replace(minute=0, second=0) \
                    + timedelta(hours=9 + i % 6 - self.base_time.hour)
                self.add_event(mb.address, subject=f"{_TOPICS[i % len(_TOPICS)]} call", start=start,
                               minutes=30 + 15 * (i % 3), attendees=[self.person(i), self.person(i + 5)])

    # -- building --------------------------------------------------------------------------------

    def person(self, i: int) -> tuple[str, str]:
        first, last = _FIRST[i % len(_FIRST)], _LAST[(i // len(_FIRST)) % len(_LAST)]
        return f"{first}.{last}{i // (len(_FIRST) * len(_LAST)) or ''}@example.com".lower(), f"{first} {last}"

    def _id(self, mailbox: str, kind: str) -> str:
        self._n += 1
        digest = base64.urlsafe_b64encode(hashlib.sha1(f"{mailbox}/{kind}/{self._n}".encode()).digest()).decode()
        return f"AAMkAD{digest[:26]}{'AAA' if kind == 'message' else 'AAB'}="

    def _tick(self) -> tuple[int, str]:
        self.seq += 1
        self._last = max(self.clock(), self._last + timedelta(milliseconds=1))
        return self.seq, self._last.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self._last.microsecond // 1000:03d}Z"

    def add_mailbox(self, address: str) -> Mailbox:
        local = address.split("@")[0]
        name = " ".join(p.capitalize() for p in local.replace("_", ".").split("."))
        mb = Mailbox(address=address, name=name)
        for wk in WELL_KNOWN:
            fid = "AQMkAD" + hashlib.sha1(f"{address}/{wk}".encode()).hexdigest()[:20] + "AAA="
            mb.folders[wk] = fid
            mb.items[fid] = {}
        mb.items["calendar"] = {}
        self.mailboxes[address.lower()] = mb
        return mb

    def mailbox(self, who: str) -> Mailbox:
        mb = self.mailboxes.get(who.lower())
        if mb is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{who}' is invalid.")
        return mb

    def folder_id(self, mb: Mailbox, folder: str) -> str:
        if folder.lower() in mb.folders:
            return mb.folders[folder.lower()]
        if folder in mb.items and folder != "calendar":
            return folder
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def _put(self, mb: Mailbox, collection: str, raw: dict[str, Any]) -> str:
        seq, stamp = self._tick()
        raw.setdefault("createdDateTime", stamp)
        raw["lastModifiedDateTime"] = stamp
        raw["changeKey"] = base64.b64encode(f"{raw['id']}/{seq}".encode()).decode()[:24]
        raw["@odata.etag"] = f'W/"{raw["changeKey"]}"'
        items = mb.items[collection]
        item = items.get(raw["id"])
        if item is None:
            items[raw["id"]] = Item(raw["id"], seq, [raw])
        else:
            item.versions.append(raw)
            item.seq, item.deleted = seq, False
        return str(raw["id"])

    def deliver(self, mailbox: str, folder: str, *, sender: tuple[str, str], to: list[tuple[str, str]],
                cc: list[tuple[str, str]] | None = None, subject: str = "", sent_at: datetime | None = None,
                body: str = "Hello, see the figures below.", message_id: str | None = None,
                bad: bool = False) -> str:
        """Put one message in one folder (as Graph would show it there); returns its id."""
        with self.lock:
            mb = self.mailbox(mailbox)
            fid = self.folder_id(mb, folder)
            sent = sent_at or self.clock().replace(microsecond=0)
            ext = self._id(mb.address, "message")

            def rcpt(people: list[tuple[str, str]]) -> list[dict[str, Any]]:
                return [{"emailAddress": {"name": n, "address": a}} for a, n in people]

            raw: dict[str, Any] = {
                "@odata.type": "#microsoft.graph.message", "id": ext, "categories": [],
                "receivedDateTime": iso(sent + timedelta(seconds=2)), "sentDateTime": iso(sent),
                "hasAttachments": False,
                "internetMessageId": message_id or f"<{hashlib.sha1(ext.encode()).hexdigest()[:20]}@contoso.test>",
                "subject": subject, "bodyPreview": body[:255], "importance": "normal", "parentFolderId": fid,
                "conversationId": "AAQkAD" + hashlib.sha1(subject.removeprefix("Re: ").encode()).hexdigest()[:20] + "=",
                "isDeliveryReceiptRequested": False, "isReadReceiptRequested": False,
                "isRead": folder.lower() == "sentitems", "isDraft": False,
                "webLink": f"https://outlook.office365.com/owa/?ItemID={ext}&exvsurl=1&viewmodel=ReadMessageItem",
                "inferenceClassification": "focused", "body": {"contentType": "text", "content": body},
                "sender": {"emailAddress": {"name": sender[1], "address": sender[0]}},
                "from": {"emailAddress": {"name": sender[1], "address": sender[0]}},
                "toRecipients": rcpt(to), "ccRecipients": rcpt(cc or []), "bccRecipients": [], "replyTo": [],
                "flag": {"flagStatus": "notFlagged"},
            }
            if bad:  # not a shape Graph sends: the control API's way to plant a record the hub must reject
                raw["sentDateTime"], raw["receivedDateTime"] = "not-a-date", None
            return self._put(mb, fid, raw)

    def send(self, sender: str, to: list[str], subject: str, cc: list[str] | None = None,
             sent_at: datetime | None = None) -> dict[str, str]:
        """A mail between mailboxes and/or outsiders: a copy in the sender's Sent Items and in each
        recipient mailbox's Inbox, all with one internetMessageId. Returns mailbox -> message id."""
        with self.lock:
            mid = f"<{hashlib.sha1(f'{sender}/{subject}/{self.seq}'.encode()).hexdigest()[:24]}@contoso.test>"
            names = {m.address.lower(): m.name for m in self.mailboxes.values()}

            def who(a: str) -> tuple[str, str]:
                return a, names.get(a.lower(), a.split("@")[0].replace(".", " ").title())

            out: dict[str, str] = {}
            kw: dict[str, Any] = {"sender": who(sender), "to": [who(a) for a in to], "cc": [who(a) for a in cc or []],
                                  "subject": subject, "message_id": mid,
                                  "sent_at": sent_at or self.clock().replace(microsecond=0)}
            if sender.lower() in self.mailboxes:
                out[sender.lower()] = self.deliver(sender, "sentitems", **kw)
            for a in [*to, *(cc or [])]:
                if a.lower() in self.mailboxes and a.lower() not in out:
                    out[a.lower()] = self.deliver(a, "inbox", **kw)
            return out

    def add_event(self, mailbox: str, *, subject: str, start: datetime, minutes: int = 30,
                  attendees: list[tuple[str, str]] | None = None, organizer: tuple[str, str] | None = None,
                  responses: dict[str, str] | None = None) -> str:
        with self.lock:
            mb = self.mailbox(mailbox)
            ext = self._id(mb.address, "event")
            org = organizer or (mb.address, mb.name)
            responses = responses or {}
            atts = [{"type": "required", "status": {"response": "organizer" if a == org[0] else
                                                     responses.get(a, "none"), "time": "0001-01-01T00:00:00Z"},
                     "emailAddress": {"name": n, "address": a}} for a, n in [org, *(attendees or [])]]
            raw: dict[str, Any] = {
                "@odata.type": "#microsoft.graph.event", "id": ext, "categories": [], "transactionId": None,
                "originalStartTimeZone": "UTC", "originalEndTimeZone": "UTC",
                "iCalUId": "040000008200E00074C5B7101A82E008" + hashlib.sha1(ext.encode()).hexdigest()[:32].upper(),
                "reminderMinutesBeforeStart": 15, "isReminderOn": True, "hasAttachments": False,
                "subject": subject, "bodyPreview": "Agenda: numbers, next steps.", "importance": "normal",
                "sensitivity": "normal", "isAllDay": False, "isCancelled": False,
                "isOrganizer": org[0].lower() == mb.address.lower(), "responseRequested": True,
                "seriesMasterId": None, "showAs": "busy", "type": "singleInstance",
                "webLink": f"https://outlook.office365.com/owa/?itemid={ext}&exvsurl=1&path=/calendar/item",
                "onlineMeetingUrl": None, "isOnlineMeeting": False, "isDraft": False,
                "responseStatus": {"response": "organizer" if org[0].lower() == mb.address.lower() else "none",
                                   "time": "0001-01-01T00:00:00Z"},
                "body": {"contentType": "html", "content": "<html><body>Agenda: numbers, next steps.</body></html>"},
                "start": {"dateTime": iso(start, True), "timeZone": "UTC"},
                "end": {"dateTime": iso(start + timedelta(minutes=minutes), True), "timeZone": "UTC"},
                "location": {"displayName": "Teams", "locationType": "default"}, "locations": [],
                "recurrence": None, "attendees": atts,
                "organizer": {"emailAddress": {"name": org[1], "address": org[0]}},
            }
            return self._put(mb, "calendar", raw)

    # -- changes (the control API) --------------------------------------------------------------

    def _find(self, mb: Mailbox, ext: str) -> tuple[str, Item]:
        for collection, items in mb.items.items():
            if ext in items and not items[ext].deleted:
                return collection, items[ext]
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")

    def ids(self, mailbox: str, folder: str) -> list[str]:
        """Live ids of a folder (or of the calendar, folder="calendar"), in id order."""
        with self.lock:
            mb = self.mailbox(mailbox)
            fid = "calendar" if folder == "calendar" else self.folder_id(mb, folder)
            return sorted(i for i, it in mb.items[fid].items() if not it.deleted)

    def update(self, mailbox: str, ext: str, changes: dict[str, Any]) -> str:
        """A new version of a message or event with `changes` applied."""
        with self.lock:
            mb = self.mailbox(mailbox)
            collection, item = self._find(mb, ext)
            raw = orjson.loads(orjson.dumps(item.current))
            raw.update(changes)
            return self._put(mb, collection, raw)

    def modify_messages(self, mailbox: str, folder: str, count: int) -> list[str]:
        """Mark `count` messages of a folder read/unread (spread over the folder); returns their ids."""
        with self.lock:
            live = self.ids(mailbox, folder)
            picks = live[:: max(1, len(live) // max(count, 1))][:count]
            for ext in picks:
                cur = self._find(self.mailbox(mailbox), ext)[1].current
                self.update(mailbox, ext, {"isRead": not cur.get("isRead")})
            return picks

    def delete(self, mailbox: str, ids: list[str], reason: str = "deleted") -> list[str]:
        """`reason`: `deleted`, or `changed` (documented as soft-deleted or restorable)."""
        with self.lock:
            mb = self.mailbox(mailbox)
            for ext in ids:
                _collection, item = self._find(mb, ext)
                item.seq, _stamp = self._tick()
                item.deleted, item.removed_reason = True, reason
            return ids

    def move_event(self, mailbox: str, ext: str, start: datetime, minutes: int | None = None) -> str:
        with self.lock:
            cur = self._find(self.mailbox(mailbox), ext)[1].current
            old_start = datetime.fromisoformat(cur["start"]["dateTime"][:19]).replace(tzinfo=UTC)
            old_end = datetime.fromisoformat(cur["end"]["dateTime"][:19]).replace(tzinfo=UTC)
            length = timedelta(minutes=minutes) if minutes is not None else old_end - old_start
            return self.update(mailbox, ext, {"start": {"dateTime": iso(start, True), "timeZone": "UTC"},
                                              "end": {"dateTime": iso(start + length, True), "timeZone": "UTC"}})

    def cancel_event(self, mailbox: str, ext: str) -> str:
        with self.lock:
            cur = self._find(self.mailbox(mailbox), ext)[1].current
            return self.update(mailbox, ext, {"isCancelled": True, "subject": f"Canceled: {cur.get('subject')}"})

    def respond(self, mailbox: str, ext: str, attendee: str, response: str) -> str:
        with self.lock:
            cur = self._find(self.mailbox(mailbox), ext)[1].current
            atts = [dict(a, status={"response": response, "time": iso(self.base_time)})
                    if a["emailAddress"]["address"].lower() == attendee.lower() else a for a in cur["attendees"]]
            return self.update(mailbox, ext, {"attendees": atts})

    def replay(self, mailbox: str, ext: str, version: int = -2) -> None:
        """Graph may send an item again, an older version too: the next delta page of the item's
        collection carries `versions[version]` after the current one."""
        with self.lock:
            mb = self.mailbox(mailbox)
            collection, item = self._find(mb, ext)
            self.replays.setdefault((mb.address.lower(), collection), []).append(item.versions[version])

    def expire_tokens(self, mailbox: str | None = None, code: str = "resyncRequired") -> None:
        """Every state token issued so far for `mailbox` (all when None) is rejected from now on:
        `resyncRequired` answers 410 Gone, `syncStateNotFound`/`syncStateInvalid` 400 [U]."""
        with self.lock:
            for mb in [self.mailbox(mailbox)] if mailbox else list(self.mailboxes.values()):
                mb.generation += 1
                mb.expire_code = code

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 0) -> None:
        with self.lock:
            self.faults.extend([(status, retry_after)] * count)

    def take_fault(self) -> tuple[int, float | None] | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def count_request(self, what: str) -> None:
        with self.lock:
            self.requests[what] = self.requests.get(what, 0) + 1

    # -- delta ------------------------------------------------------------------------------------

    def delta(self, mb: Mailbox, collection: str, state: dict[str, Any], page_size: int,
              window: tuple[datetime, datetime] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a round: (items, state of the next page or None when the round is done).

        `state`: s (changes after this sequence; -1 for an initial round), u (the round's
        snapshot), a (keyset: the last id sent).
        """
        since, until, after = int(state["s"]), int(state["u"]), str(state.get("a") or "")
        items = mb.items[collection]
        picked: list[dict[str, Any]] = []
        more = False
        for ext in sorted(i for i in items if i > after):
            item = items[ext]
            if not since < item.seq <= until or (since < 0 and item.deleted):
                continue
            if len(picked) == page_size:
                more = True
                break
            if item.deleted:
                picked.append({"@odata.type": item.current.get("@odata.type"), "id": ext,
                               "@removed": {"reason": item.removed_reason}})
            elif window is not None and not _overlaps(item.current, window):
                if since >= 0:  # documented: changed events outside the window come as removed
                    picked.append({"@odata.type": "#microsoft.graph.event", "id": ext,
                                   "@removed": {"reason": "deleted"}})
            else:
                picked.append(item.current)
        replays = self.replays.pop((mb.address.lower(), collection), [])
        last = picked[-1]["id"] if picked else after
        return picked + replays, ({**state, "a": last} if more else None)


def _overlaps(raw: dict[str, Any], window: tuple[datetime, datetime]) -> bool:
    start = datetime.fromisoformat(raw["start"]["dateTime"][:19]).replace(tzinfo=UTC)
    end = datetime.fromisoformat(raw["end"]["dateTime"][:19]).replace(tzinfo=UTC)
    return start < window[1] and end > window[0]
