"""Google Calendar through the real sync engine into SQLite and PostgreSQL, against the sandbox on
loopback: sync-token expiry -> a recorded full resync with nothing lost or doubled; a meeting
cancelled; one rescheduled twice whose versions arrive out of order; a recurring series with a
moved and a cancelled instance; attendee responses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.google_calendar.sandbox import CalendarSandbox, CalendarStore, instance_id
from hub.app import Hub
from hub.config import parse_config
from hub.sync import StreamResult
from state import repos
from state.schema import activities, activity_participants, activity_versions, retry_queue

ANN, BOB = "ann@example.com", "bob@example.com"
TOKENS = {ANN: "ya29.ann-cal-sync-0001", BOB: "ya29.bob-cal-sync-0002"}
NAME = "calendar_main"


class StaleOnce(httpx.BaseTransport):
    """The HTTP seam: passes requests to the sandbox, except that it can answer the next events
    request with a response recorded earlier (a delayed delivery of an older version)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.stale: tuple[int, bytes] | None = None
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            stale, self.stale = self.stale, None
        if stale is not None:
            return httpx.Response(stale[0], content=stale[1], headers={"Content-Type": "application/json"})
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Rig:
    def __init__(self, db_url: str, store: CalendarStore, url: str) -> None:
        self.db_url, self.store, self.url = db_url, store, url
        self.transport = StaleOnce()

    def hub(self) -> Hub:
        cfg = parse_config({"database": self.db_url, "connectors": {NAME: {
            "kind": "google_calendar", "base_url": self.url, "page_size": 20, "requests_per_second": 10_000,
            "calendars": [{"address": a, "access_token": t} for a, t in TOKENS.items()]}}})
        return Hub(cfg, sleep=lambda _s: None, transport=self.transport).ready()

    def run(self) -> StreamResult:
        hub = self.hub()
        try:
            conn = hub.factory.build(NAME)
            try:
                result = hub.engine.run_stream(conn, "events")
            finally:
                conn.close()
            assert result.status == "ok", result.error
            return result
        finally:
            hub.close()

    def rows(self) -> dict[str, dict[str, Any]]:
        hub = self.hub()
        try:
            with hub.db.connect() as c:
                found = {r["external_id"]: dict(r) for r in c.execute(
                    select(activities).where(activities.c.source == NAME)).mappings()}
                counts: dict[str, int] = dict(c.execute(select(activity_versions.c.external_id, func.count())
                                                        .where(activity_versions.c.source == NAME)
                                                        .group_by(activity_versions.c.external_id)).all())
                parts: dict[str, list[tuple[str, str, str | None]]] = {}
                ids = {r["id"]: e for e, r in found.items()}
                for p in c.execute(select(activity_participants)).mappings():
                    if p["activity_id"] in ids:
                        parts.setdefault(ids[p["activity_id"]], []).append((p["role"], p["email"], p["response"]))
            for ext, row in found.items():
                row["versions"] = counts.get(ext, 0)
                row["people"] = sorted(parts.get(ext, []))
            return found
        finally:
            hub.close()

    def live(self) -> set[str]:
        return {f"{a}:{e}" for a in TOKENS for e in self.store.ids(a)}


def start_at(hours: int) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)


def rig_for(db_url: str, **options: Any) -> Iterator[Rig]:
    store = CalendarStore(TOKENS, 15, **options)
    with CalendarSandbox(store) as server:
        yield Rig(db_url, store, server.url)


@pytest.fixture
def rig(db_url: str) -> Iterator[Rig]:
    yield from rig_for(db_url)


def test_sync_token_expiry_is_a_recorded_full_resync_with_nothing_lost_or_doubled(rig: Rig) -> None:
    assert rig.run().read == 30
    moved = rig.store.ids(ANN)[3]
    rig.store.move(ANN, moved, start_at(30))
    assert rig.run().read == 1
    new = rig.store.create(BOB, summary="Kick-off", start=start_at(50), end=start_at(51), attendees=["lee@c.example"])
    rig.store.expire(ANN)
    third = rig.run()
    assert third.full_resync and "expired" in (third.resync_reason or "")
    rows = rig.rows()
    assert set(rows) == rig.live() and f"{BOB}:{new}" in rows
    versions = {e: r["versions"] for e, r in rows.items()}
    assert versions.pop(f"{ANN}:{moved}") == 2
    assert set(versions.values()) == {1}, "a resync re-reads meetings without making new versions of them"
    assert rows[f"{ANN}:{moved}"]["occurred_at"] == start_at(30)
    rig.store.requests.clear()
    assert rig.run().requests == 2 and rig.store.requests == {"events.list": 2}


@pytest.mark.parametrize("tombstones", ["minimal", "full"])
def test_a_cancelled_meeting_keeps_its_time_and_people(db_url: str, tombstones: str) -> None:
    """What the docs guarantee of a cancelled (or deleted) event is its id (`minimal`): the connector
    reports it as a delete and a status-only change, and the hub restates the stored activity; when
    Google sends the whole event (`full`), that is the new version. Either way the activity's status
    becomes `cancelled`, as Microsoft 365 says it, and its time and people stay."""
    for rig in rig_for(db_url, tombstones=tombstones):
        rig.run()
        eid = rig.store.ids(ANN)[2]
        before = rig.rows()[f"{ANN}:{eid}"]
        rig.store.cancel(ANN, eid)
        result = rig.run()
        assert (result.deleted, result.read) == ((1, 1) if tombstones == "minimal" else (0, 1))
        row = rig.rows()[f"{ANN}:{eid}"]
        assert row["status"] == "cancelled" and row["versions"] == 2
        kept = ("occurred_at", "ended_at", "subject", "direction", "url", "contact_id", "people")
        assert {k: row[k] for k in kept} == {k: before[k] for k in kept}
        again = rig.run()  # nothing new: no further version
        assert again.read == 0 and rig.rows()[f"{ANN}:{eid}"]["versions"] == 2


def test_a_meeting_rescheduled_twice_ends_at_its_latest_time_even_when_versions_arrive_out_of_order(
        rig: Rig) -> None:
    rig.run()
    eid = rig.store.ids(ANN)[4]
    rig.store.move(ANN, eid, start_at(40))
    # the answer carrying the first move, held back (as a slow worker or a redelivery would)
    hub = rig.hub()
    try:
        with hub.db.connect() as c:
            cursor = repos.get_cursor(c, NAME, "events")
    finally:
        hub.close()
    assert cursor is not None
    sync_token = cursor["calendars"][ANN]["sync_token"]
    first_move = httpx.get(f"{rig.url}/calendar/v3/calendars/{ANN}/events",
                           params={"syncToken": sync_token, "singleEvents": "true", "maxResults": 20},
                           headers={"Authorization": f"Bearer {TOKENS[ANN]}"})
    assert [i["id"] for i in first_move.json()["items"]] == [eid]
    rig.store.move(ANN, eid, start_at(60))
    assert rig.run().read == 1
    rig.transport.stale = (first_move.status_code, first_move.content)
    late = rig.run()
    assert late.read == 1, "the older version did arrive"
    row = rig.rows()[f"{ANN}:{eid}"]
    assert row["occurred_at"] == start_at(60) and row["ended_at"] == start_at(60) + timedelta(minutes=30)
    assert row["versions"] == 3, "all three versions kept as history, the latest shown"


def test_a_series_expands_into_instances_with_a_moved_and_a_cancelled_exception(rig: Rig) -> None:
    first = start_at(24)
    series = rig.store.create(ANN, summary="Weekly", start=first, end=first + timedelta(hours=1),
                              attendees=["lee@customer.example"], recurrence=["RRULE:FREQ=WEEKLY;COUNT=6"])
    rig.run()
    inst = [f"{ANN}:{instance_id(series, first + timedelta(weeks=k))}" for k in range(6)]
    assert set(inst) <= set(rig.rows())
    moved, cancelled = inst[2].split(":", 1)[1], inst[4].split(":", 1)[1]
    rig.store.move(ANN, moved, first + timedelta(weeks=2, days=1))
    rig.store.cancel(ANN, cancelled)
    result = rig.run()
    assert (result.read, result.deleted) == (2, 1)  # the cancelled one a tombstone: a delete, status only
    rows = rig.rows()
    assert rows[inst[2]]["occurred_at"] == first + timedelta(weeks=2, days=1)
    assert rows[inst[4]]["status"] == "cancelled" and rows[inst[4]]["occurred_at"] == first + timedelta(weeks=4)
    assert [rows[i]["versions"] for i in inst] == [1, 1, 2, 1, 2, 1]


def test_attendee_responses_become_participants_and_a_new_answer_a_new_version(rig: Rig) -> None:
    eid = rig.store.create(ANN, summary="Demo", start=start_at(5), end=start_at(6),
                           attendees=["Lee@Customer.example", "kim@customer.example"])
    rig.run()
    assert rig.rows()[f"{ANN}:{eid}"]["people"] == [
        ("attendee", "kim@customer.example", "needsAction"), ("attendee", "lee@customer.example", "needsAction"),
        ("organizer", ANN, "accepted")]
    rig.store.respond(ANN, eid, "lee@customer.example", "declined")
    rig.run()
    row = rig.rows()[f"{ANN}:{eid}"]
    assert ("attendee", "lee@customer.example", "declined") in row["people"] and row["versions"] == 2


def test_an_event_whose_start_does_not_parse_goes_to_the_retry_queue_and_the_rest_syncs(rig: Rig) -> None:
    bad = rig.store.create(ANN, summary="broken", start=start_at(3), end=start_at(4),
                           raw_start={"dateTime": "next tuesday"})
    result = rig.run()
    assert (result.read, result.failed, result.written) == (31, 1, 30)
    hub = rig.hub()
    try:
        with hub.db.connect() as c:
            queued = c.execute(select(retry_queue)).mappings().all()
    finally:
        hub.close()
    assert [q["external_id"] for q in queued] == [f"{ANN}:{bad}"] and "next tuesday" in queued[0]["reason"]
    assert set(rig.rows()) == rig.live() - {f"{ANN}:{bad}"}
