"""A local simulator of the Google Calendar API (v3) events list, for demos, tests and benchmarks.

It follows the discovery document's shapes (`calendar.v3.json`: Events, Event, EventAttendee,
EventDateTime), not any connector's assumptions:

- `GET /calendar/v3/calendars/{calendarId}/events` with `maxResults` (default 250, at most 2,500),
  `pageToken`, `syncToken`, `singleEvents`, `showDeleted`, `timeMin`/`timeMax`, `updatedMin`. Pages
  carry `nextPageToken`; the last carries `nextSyncToken` (never both). `syncToken` may not be combined
  with `timeMin`, `timeMax`, `updatedMin`, `q`, `orderBy`, `iCalUID` (400); with it, deleted events
  are always included. A sync token older than the calendar keeps -> **410** `fullSyncRequired`.
- `singleEvents=true` expands recurring events (`RRULE:FREQ=DAILY|WEEKLY;INTERVAL=;COUNT=|UNTIL=`)
  into instances `<id>_<yyyymmddThhmmssZ>` with `recurringEventId` and `originalStartTime`; a moved
  instance is an exception with its own `start`, a cancelled one a tombstone. `timeMin` bounds an
  event's end, `timeMax` its start (as Google's docs say).
- Cancelled events: per the docs only `id` is guaranteed (and `recurringEventId`,
  `originalStartTime` for a cancelled instance); `tombstones="full"` keeps every field instead.

`calendarId` is the calendar's address or `primary`; the bearer token names the calendar (401
without one, 403 for another's). Errors have Google's body `{"error": {"code", "message", "errors"}}`.

Sandbox control (not Google's, no auth): `POST /_sandbox/events` (create), `/_sandbox/move`
(reschedule an event or one instance), `/_sandbox/cancel`, `/_sandbox/respond`, `/_sandbox/expire`,
`/_sandbox/fail`; `GET /_sandbox/stats`.
Run it with `python -m connectors.google_calendar.sandbox --calendar ann@example.com=token --events 50`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.gmail.loopback import LoopbackServer

__all__ = ["CalendarSandbox", "CalendarStore", "create_app", "main"]

PAGE_DEFAULT, PAGE_MAX = 250, 2500
MAX_INSTANCES = 400  # an open-ended series is expanded this far
_NOT_WITH_SYNC = ("timeMin", "timeMax", "updatedMin", "q", "orderBy", "iCalUID", "privateExtendedProperty",
                  "sharedExtendedProperty")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           410: "GONE", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_REASON = {400: "badRequest", 401: "authError", 403: "forbidden", 404: "notFound", 410: "fullSyncRequired",
           429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}


class CalendarError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason or _REASON.get(code, "failed")


def error_body(code: int, message: str, reason: str) -> dict[str, Any]:
    # the Calendar errors guide: 410 comes from domain "calendar", location syncToken
    detail = {"domain": "calendar", "reason": reason, "message": message, "locationType": "parameter",
              "location": "syncToken"} if code == 410 else {"domain": "global", "reason": reason, "message": message}
    return {"error": {"code": code, "message": message, "errors": [detail],
                      "status": _STATUS.get(code, "UNKNOWN")}}


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CalendarError(400, f"Bad Request: invalid time {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass
class Event:
    """An event as the calendar stores it; `seq` orders changes (what a sync token remembers)."""

    id: str
    summary: str
    start: datetime
    end: datetime
    organizer: str
    attendees: list[dict[str, Any]]
    seq: int
    updated: datetime
    created: datetime
    status: str = "confirmed"
    recurrence: list[str] | None = None
    recurring_event_id: str | None = None  # set on an exception (a moved or cancelled instance)
    original_start: datetime | None = None
    description: str | None = None
    sequence: int = 0
    raw_start: dict[str, Any] | None = None  # what `start` says on the wire, when a test wants it broken


@dataclass
class Calendar:
    address: str
    token: str
    events: dict[str, Event] = field(default_factory=dict)  # masters, single events and exceptions
    floor: int = 0  # sync tokens from before this seq are too old (410)


def _rrule(rule: Sequence[str] | None) -> tuple[timedelta, int | None, datetime | None]:
    for line in rule or ():
        if line.startswith("RRULE:"):
            parts = dict(p.split("=", 1) for p in line[6:].split(";") if "=" in p)
            step = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(weeks=1)}.get(parts.get("FREQ", ""))
            if step is None:
                raise CalendarError(400, f"the sandbox expands FREQ=DAILY|WEEKLY only, not {line!r}")
            until = parse_time(re.sub(r"^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$", r"\1-\2-\3T\4:\5:\6Z",
                                      parts["UNTIL"])) if "UNTIL" in parts else None
            return step * int(parts.get("INTERVAL", "1")), int(parts["COUNT"]) if "COUNT" in parts else None, until
    raise CalendarError(400, "recurrence needs an RRULE line")


def instance_id(master: str, start: datetime) -> str:
    return f"{master}_{start.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


class CalendarStore:
    """The calendars' state; every method is thread-safe (the server runs in another thread)."""

    def __init__(self, calendars: dict[str, str] | None = None, events: int = 0, *, now: datetime | None = None,
                 tombstones: str = "minimal") -> None:
        if tombstones not in ("minimal", "full"):
            raise ValueError("tombstones is 'minimal' (what the docs guarantee) or 'full'")
        self.lock = threading.RLock()
        self.tombstones = tombstones
        self.calendars: dict[str, Calendar] = {}
        self.seq = 0
        self.requests: Counter[str] = Counter()
        self._failures: list[tuple[int, float | None]] = []
        self._n = 0
        base = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
        for address, token in (calendars or {"ann@example.com": "sandbox-token"}).items():
            self.calendars[address.lower()] = Calendar(address, token)
        for cal in list(self.calendars.values()):
            for k in range(events):
                start = base + timedelta(hours=5 * (k - events // 2))
                self.create(cal.address, summary=f"Meeting {k}", start=start, end=start + timedelta(minutes=30),
                            attendees=[f"contact{k}@customer{k % 10}.example"])

    def cal(self, address: str) -> Calendar:
        try:
            return self.calendars[address.lower()]
        except KeyError:
            raise KeyError(f"no calendar {address!r} (have: {', '.join(self.calendars)})") from None

    def _tick(self) -> tuple[int, datetime]:
        self.seq += 1
        return self.seq, datetime.now(UTC)

    # -- the vendor's side (what people do in Calendar) ------------------------------------------
    def create(self, calendar: str, *, summary: str, start: datetime, end: datetime, attendees: Sequence[str] = (),
               organizer: str | None = None, recurrence: Sequence[str] | None = None,
               description: str | None = None, raw_start: dict[str, Any] | None = None) -> str:
        with self.lock:
            cal = self.cal(calendar)
            self._n += 1
            eid = hashlib.sha1(f"{cal.address}:{self._n}".encode()).hexdigest()[:26]
            seq, now = self._tick()
            org = organizer or cal.address
            people: list[dict[str, Any]] = [{"email": org, "organizer": True, "responseStatus": "accepted"}]
            people += [{"email": a, "responseStatus": "needsAction"} for a in attendees]
            cal.events[eid] = Event(eid, summary, start, end, org, people, seq, now, now,
                                    recurrence=list(recurrence) if recurrence else None, description=description,
                                    raw_start=raw_start)
            return eid

    def move(self, calendar: str, event_id: str, start: datetime, end: datetime | None = None) -> str:
        """Reschedule an event, or one instance of a series (`<id>_<start>`: it becomes an exception)."""
        with self.lock:
            cal = self.cal(calendar)
            ev = cal.events.get(event_id) or self._exception(cal, event_id)
            seq, now = self._tick()
            ev.end = end or start + (ev.end - ev.start)
            ev.start, ev.seq, ev.updated, ev.sequence = start, seq, now, ev.sequence + 1
            return ev.id

    def cancel(self, calendar: str, event_id: str) -> str:
        """Delete an event (or a series), or cancel one instance of a series."""
        with self.lock:
            cal = self.cal(calendar)
            ev = cal.events.get(event_id) or self._exception(cal, event_id)
            ev.seq, ev.updated = self._tick()
            ev.status = "cancelled"
            return ev.id

    def respond(self, calendar: str, event_id: str, email: str, response: str) -> None:
        with self.lock:
            ev = self.cal(calendar).events[event_id]
            for a in ev.attendees:
                if a["email"].lower() == email.lower():
                    a["responseStatus"] = response
            ev.seq, ev.updated = self._tick()

    def expire(self, calendar: str) -> int:
        """Every sync token handed out so far becomes too old: the next use answers 410."""
        with self.lock:
            self.seq += 1
            self.cal(calendar).floor = self.seq
            return self.seq

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = None) -> None:
        with self.lock:
            self._failures.extend([(status, retry_after)] * count)

    def take_failure(self) -> tuple[int, float | None] | None:
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def _exception(self, cal: Calendar, iid: str) -> Event:
        master_id, _, stamp = iid.rpartition("_")
        master = cal.events.get(master_id)
        if master is None or not master.recurrence:
            raise KeyError(f"no event {iid!r}")
        original = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if iid not in {instance_id(master.id, s) for s in self._starts(master)}:
            raise KeyError(f"{master_id} has no instance at {stamp}")
        ev = Event(iid, master.summary, original, original + (master.end - master.start), master.organizer,
                   [dict(a) for a in master.attendees], master.seq, master.updated, master.created,
                   recurring_event_id=master.id, original_start=original, description=master.description)
        cal.events[iid] = ev
        return ev

    def _starts(self, master: Event) -> list[datetime]:
        step, count, until = _rrule(master.recurrence)
        out: list[datetime] = []
        at = master.start
        while len(out) < (count or MAX_INSTANCES) and (until is None or at <= until):
            out.append(at)
            at += step
        return out

    # -- views ---------------------------------------------------------------------------------
    def items(self, cal: Calendar, single: bool) -> list[Event]:
        """Events as a listing sees them: series expanded into instances when `single`."""
        out = []
        for ev in cal.events.values():
            if ev.recurring_event_id is not None:
                if not single:
                    out.append(ev)
                continue
            if not (single and ev.recurrence):
                out.append(ev)
                continue
            for s in self._starts(ev):
                iid = instance_id(ev.id, s)
                exc = cal.events.get(iid)
                if exc is None:
                    exc = Event(iid, ev.summary, s, s + (ev.end - ev.start), ev.organizer, ev.attendees, ev.seq,
                                ev.updated, ev.created, status=ev.status, recurring_event_id=ev.id, original_start=s,
                                description=ev.description, sequence=ev.sequence)
                elif ev.status == "cancelled" or ev.seq > exc.seq:
                    # a change to the series reaches every instance, exceptions included
                    exc = Event(**{**exc.__dict__, "seq": max(ev.seq, exc.seq), "updated": max(ev.updated, exc.updated),
                                   "status": "cancelled" if ev.status == "cancelled" else exc.status})
                out.append(exc)
        return out

    def resource(self, cal: Calendar, ev: Event) -> dict[str, Any]:
        base: dict[str, Any] = {"kind": "calendar#event", "etag": f'"{ev.seq}"', "id": ev.id, "status": ev.status}
        if ev.status == "cancelled" and self.tombstones == "minimal":
            if ev.recurring_event_id:
                base["recurringEventId"] = ev.recurring_event_id
                base["originalStartTime"] = {"dateTime": rfc3339(ev.original_start or ev.start), "timeZone": "UTC"}
            return base
        out = {**base, "htmlLink": f"https://www.google.com/calendar/event?eid={ev.id}", "created": rfc3339(ev.created),
               "updated": rfc3339(ev.updated), "summary": ev.summary,
               "creator": {"email": ev.organizer}, "organizer": {"email": ev.organizer},
               "start": ev.raw_start or {"dateTime": rfc3339(ev.start), "timeZone": "UTC"},
               "end": {"dateTime": rfc3339(ev.end), "timeZone": "UTC"},
               "iCalUID": f"{(ev.recurring_event_id or ev.id)}@google.com", "sequence": ev.sequence,
               "attendees": [{**a, **({"self": True} if a["email"].lower() == cal.address.lower() else {})}
                             for a in ev.attendees],
               "eventType": "default"}
        if ev.organizer.lower() == cal.address.lower():
            out["organizer"]["self"] = True
        if ev.description:
            out["description"] = ev.description
        if ev.recurrence and ev.recurring_event_id is None:
            out["recurrence"] = list(ev.recurrence)
        if ev.recurring_event_id:
            out["recurringEventId"] = ev.recurring_event_id
            out["originalStartTime"] = {"dateTime": rfc3339(ev.original_start or ev.start), "timeZone": "UTC"}
        return out

    def authorise(self, auth: str | None, calendar_id: str) -> Calendar:
        token = (auth or "")[7:].strip() if (auth or "").startswith("Bearer ") else None
        with self.lock:
            cal = next((c for c in self.calendars.values() if token and c.token == token), None)
        if cal is None:
            raise CalendarError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                     "login cookie or other valid authentication credential.")
        if calendar_id != "primary" and calendar_id.lower() != cal.address.lower():
            raise CalendarError(404, "Not Found", "notFound")
        return cal

    def ids(self, calendar: str, *, single: bool = True, live: bool = True) -> list[str]:
        with self.lock:
            return [e.id for e in self.items(self.cal(calendar), single) if not live or e.status != "cancelled"]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(self.requests), "seq": self.seq}


def _token(parts: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def _untoken(token: str, what: str) -> list[Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise CalendarError(400, f"Invalid {what}", "invalid") from None
    if not isinstance(value, list):
        raise CalendarError(400, f"Invalid {what}", "invalid")
    return value


def list_events(store: CalendarStore, cal: Calendar, request: Request) -> dict[str, Any]:
    qp = request.query_params
    raw = qp.get("maxResults")
    if raw is not None and (not raw.isdigit() or int(raw) < 1):
        raise CalendarError(400, f"Invalid value for maxResults: {raw!r}", "invalid")
    size = min(int(raw), PAGE_MAX) if raw else PAGE_DEFAULT
    single = qp.get("singleEvents", "false").lower() == "true"
    sync = qp.get("syncToken")
    if sync is not None:
        bad = [p for p in _NOT_WITH_SYNC if p in qp]
        if bad:
            raise CalendarError(400, f"The syncToken parameter cannot be combined with {', '.join(bad)}.", "invalid")
        if qp.get("showDeleted", "true").lower() == "false":
            raise CalendarError(400, "showDeleted=false is not allowed with a syncToken.", "invalid")
        since, token_single = _untoken(sync, "sync token")[1:3]
        if bool(token_single) != single:
            raise CalendarError(400, "singleEvents must match the request that gave the sync token.", "invalid")
    with store.lock:
        if sync is not None and int(since) < cal.floor:
            raise CalendarError(410, "Sync token is no longer valid, a full sync is required.", "fullSyncRequired")
        token = qp.get("pageToken")
        snapshot, after = (_untoken(token, "page token")[:2]) if token else (store.seq, "")
        found = store.items(cal, single)
        resources = []
        for ev in sorted(found, key=lambda e: e.id):
            if ev.id <= after:
                continue
            if sync is not None:
                if ev.seq <= int(since):
                    continue
            else:
                if ev.status == "cancelled" and qp.get("showDeleted", "false").lower() != "true":
                    continue
                if "timeMin" in qp and ev.end <= parse_time(qp["timeMin"]):
                    continue
                if "timeMax" in qp and ev.start >= parse_time(qp["timeMax"]):
                    continue
                if "updatedMin" in qp and ev.updated < parse_time(qp["updatedMin"]):
                    continue
            resources.append((ev, store.resource(cal, ev)))
    page = resources[:size]
    out: dict[str, Any] = {"kind": "calendar#events", "etag": f'"{snapshot}"', "summary": cal.address,
                           "updated": rfc3339(datetime.now(UTC)), "timeZone": "UTC", "accessRole": "owner",
                           "defaultReminders": [], "items": [r for _e, r in page]}
    if len(resources) > size:
        out["nextPageToken"] = _token([snapshot, page[-1][0].id])
    else:
        out["nextSyncToken"] = _token([cal.address, snapshot, single])
    return out


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def create_app(store: CalendarStore) -> Starlette:
    async def events(request: Request) -> Response:
        store.requests["events.list"] += 1
        failure = store.take_failure()
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return _json(error_body(status, "sandbox: failing on demand", _REASON.get(status, "failed")), status, headers)
        try:
            cal = store.authorise(request.headers.get("authorization"), request.path_params["calendar_id"])
            return _json(list_events(store, cal, request))
        except CalendarError as exc:
            return _json(error_body(exc.code, exc.message, exc.reason), exc.code)

    def control(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                raw = await request.body()
                return _json(action(orjson.loads(raw) if raw else {}))
            except (KeyError, ValueError, TypeError, CalendarError, orjson.JSONDecodeError) as exc:
                return _json({"error": str(exc)}, 400)
        return handle

    def create(d: dict[str, Any]) -> Any:
        start = parse_time(d["start"])
        end = parse_time(d["end"]) if d.get("end") else start + timedelta(minutes=30)
        return {"id": store.create(d["calendar"], summary=d.get("summary", "Meeting"), start=start, end=end,
                                   attendees=d.get("attendees", []), organizer=d.get("organizer"),
                                   recurrence=d.get("recurrence"), description=d.get("description"))}

    def move(d: dict[str, Any]) -> Any:
        return {"id": store.move(d["calendar"], d["id"], parse_time(d["start"]),
                                 parse_time(d["end"]) if d.get("end") else None)}

    def fail(d: dict[str, Any]) -> Any:
        store.fail_next(int(d.get("count", 1)), int(d.get("status", 429)), d.get("retry_after"))
        return {"ok": True}

    def respond(d: dict[str, Any]) -> Any:
        store.respond(d["calendar"], d["id"], d["email"], d["response"])
        return {"ok": True}

    return Starlette(routes=[
        Route("/calendar/v3/calendars/{calendar_id}/events", events, methods=["GET"]),
        Route("/_sandbox/events", control(create), methods=["POST"]),
        Route("/_sandbox/move", control(move), methods=["POST"]),
        Route("/_sandbox/cancel", control(lambda d: {"id": store.cancel(d["calendar"], d["id"])}), methods=["POST"]),
        Route("/_sandbox/respond", control(respond), methods=["POST"]),
        Route("/_sandbox/expire", control(lambda d: {"floor": store.expire(d["calendar"])}), methods=["POST"]),
        Route("/_sandbox/fail", control(fail), methods=["POST"]),
        Route("/_sandbox/stats", control(lambda _d: store.stats()), methods=["GET"]),
    ])


class CalendarSandbox(LoopbackServer):
    """`with CalendarSandbox(CalendarStore({...}, events=20)) as sb:` serves the store on loopback."""

    def __init__(self, store: CalendarStore | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store if store is not None else CalendarStore()
        super().__init__(create_app(self.store), host, port, name="calendar-sandbox")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m connectors.google_calendar.sandbox",
                                description="Run the Google Calendar API sandbox.")
    p.add_argument("--calendar", action="append", metavar="ADDRESS=TOKEN",
                   help="a calendar and its bearer token (repeatable; default ann@example.com=sandbox-token)")
    p.add_argument("--events", type=int, default=50, help="events generated per calendar")
    p.add_argument("--tombstones", choices=["minimal", "full"], default="minimal")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    cals = dict(c.split("=", 1) for c in args.calendar) if args.calendar else None
    server = CalendarSandbox(CalendarStore(cals, args.events, tombstones=args.tombstones), args.host, args.port)
    server.start()
    print(json.dumps({"url": server.url, "calendars": list(server.store.calendars)}), flush=True)
    server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
