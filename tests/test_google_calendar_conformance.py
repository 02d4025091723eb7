"""The connector conformance kit (hub.testing) applied to Google Calendar, against its sandbox on loopback.

Two calendars in one connector instance, a weekly series among the events (expanded into its
instances), small pages. The harness speaks to the sandbox's store, never to the connector.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.google_calendar.sandbox import CalendarSandbox, CalendarStore
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

CALENDARS = {"ann@example.com": "ya29.ann-calendar-0001", "bob@example.com": "ya29.bob-calendar-0002"}
PER_CALENDAR = 60
SERIES = 10
PAGE = 25


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": url, "page_size": PAGE, "requests_per_second": 10_000,
            "calendars": [{"address": a, "access_token": t} for a, t in CALENDARS.items()], **extra}


def ext(address: str, eid: str) -> str:
    return f"{address}:{eid}"


def token_seq(token: str) -> int:
    """The change number a sandbox sync token remembers (decoded with the sandbox's own format)."""
    return int(orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))[1])


def cursor_position(cursor: Cursor | None) -> tuple[tuple[int, int, int], ...]:
    cals = (cursor or {}).get("calendars") or {}
    out = []
    for address in CALENDARS:
        s = cals.get(address)
        if s is None:
            out.append((0, 0, 0))
        elif s["phase"] == "full":
            out.append((1, int(s["pages"]), 0))
        else:
            out.append((2, token_seq(s["sync_token"]), int(s["pages"])))
    return tuple(out)


def seeded_store(**options: Any) -> CalendarStore:
    store = CalendarStore(CALENDARS, PER_CALENDAR, **options)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    store.create("ann@example.com", summary="Weekly sync", start=start, end=start + timedelta(minutes=45),
                 attendees=["lee@customer1.example"], recurrence=[f"RRULE:FREQ=WEEKLY;COUNT={SERIES}"])
    return store


def calendar_harness(store: CalendarStore, url: str) -> Harness:
    cals = list(CALENDARS)

    def source_ids() -> set[str]:
        return {ext(c, e) for c in cals for e in store.ids(c)}

    def change(n: int) -> list[str]:
        out = []
        for k in range(n):
            c = cals[k % 2]
            eid = store.ids(c)[k]
            with store.lock:
                ev = store.cal(c).events[eid]
                store.move(c, eid, ev.start + timedelta(hours=1))
            out.append(ext(c, eid))
        return out

    def delete(n: int) -> list[str]:
        out = []
        for k in range(n):
            c = cals[k % 2]
            ids = store.ids(c)
            out.append(ext(c, store.cancel(c, ids[len(ids) // 2])))
        return out

    def add_bad_record() -> str:
        start = datetime.now(UTC)
        eid = store.create(cals[0], summary="broken", start=start, end=start + timedelta(hours=1),
                           raw_start={"dateTime": "next tuesday"})
        return ext(cals[0], eid)

    return Harness(kind="google_calendar", config=config(url), stream="events", source_ids=source_ids, change=change,
                   delete=delete, fail_next=lambda n, status: store.fail_next(n, status, retry_after=0),
                   add_bad_record=add_bad_record, cursor_position=cursor_position, extra={"store": store})



class TestGoogleCalendarConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = seeded_store()
        with CalendarSandbox(store) as server:
            yield calendar_harness(store, server.url)

    def test_unparseable_start_is_rejected_and_the_page_goes_on(self, harness: Harness) -> None:
        bad = harness.add_bad_record()
        pages = harness.read_all()
        rejected = [r for p in pages for r in p.rejected]
        assert [r.external_id for r in rejected] == [bad]
        assert {r.external_id for p in pages for r in p.records} == harness.source_ids() - {bad}

    def test_series_arrives_as_its_instances(self, harness: Harness) -> None:
        ids = {r.external_id for p in harness.read_all() for r in p.records}
        series = [i for i in ids if "_" in i.split(":", 1)[1]]
        assert len(series) == SERIES
