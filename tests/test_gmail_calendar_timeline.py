"""End to end on SQLite and PostgreSQL: contacts from the HubSpot sandbox, then Gmail and Google
Calendar from their sandboxes; each contact's timeline holds its emails and meetings in time order,
whatever case or display form the headers and attendee lists wrote the address in. A contact that
arrives after the mail picks its activities up (relink after the contact sync)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connectors.gmail.sandbox import GmailSandbox, GmailStore
from connectors.google_calendar.sandbox import CalendarSandbox, CalendarStore
from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.activities import timeline
from hub.app import Hub
from hub.config import parse_config
from state.schema import contacts

ANN = "ann@example.com"
GMAIL_TOKEN, CAL_TOKEN, HS_TOKEN = "ya29.ann-tl-mail-0001", "ya29.ann-tl-cal-0002", "pat-na1-timeline-0003"


class World:
    def __init__(self, db_url: str, hs: SandboxServer, gmail: GmailSandbox, cal: CalendarSandbox) -> None:
        self.db_url, self.hs, self.gmail, self.cal = db_url, hs, gmail, cal

    def hub(self) -> Hub:
        return Hub(parse_config({"database": self.db_url, "connectors": {
            "hubspot_main": {"kind": "hubspot", "base_url": self.hs.url, "auth": {"token": HS_TOKEN},
                             "search_lag_ms": 0, "streams": ["contacts"]},
            "gmail_main": {"kind": "gmail", "base_url": self.gmail.url, "requests_per_second": 10_000,
                           "internal": ["@example.com"], "mailboxes": [{"address": ANN, "access_token": GMAIL_TOKEN}]},
            "calendar_main": {"kind": "google_calendar", "base_url": self.cal.url, "requests_per_second": 10_000,
                              "internal": ["@example.com"],
                              "calendars": [{"address": ANN, "access_token": CAL_TOKEN}]}}}),
                   sleep=lambda _s: None).ready()

    def sync(self, name: str, stream: str) -> None:
        hub = self.hub()
        try:
            conn = hub.factory.build(name)
            try:
                result = hub.engine.run_stream(conn, stream)
            finally:
                conn.close()
            assert result.status == "ok", result.error
        finally:
            hub.close()

    def timeline_of(self, email: str) -> list[dict[str, Any]]:
        hub = self.hub()
        try:
            with hub.db.connect() as c:
                cid = c.execute(select(contacts.c.id).where(contacts.c.email == email)).scalar_one()
                return timeline(c, cid)
        finally:
            hub.close()


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    hs_store = SandboxStore(contacts=12)
    with SandboxServer(hs_store, token=HS_TOKEN) as hs, \
            GmailSandbox(GmailStore({ANN: GMAIL_TOKEN}, 0)) as gmail, \
            CalendarSandbox(CalendarStore({ANN: CAL_TOKEN}, 0)) as cal:
        yield World(db_url, hs, gmail, cal)


def test_each_contacts_timeline_holds_its_mail_and_meetings_in_time_order(world: World) -> None:
    hs_store: SandboxStore = world.hs.store
    lee, kim = (hs_store.raw("contacts", i)["email"] for i in (0, 1))
    lee_written = f'"{lee.split("@")[0].title()}, L." <{lee.upper()}>'  # display form, upper case
    now = datetime.now(UTC).replace(microsecond=0)
    g, c = world.gmail.store, world.cal.store
    g.add_message(ANN, sender=lee_written, to=[f"Ann <{ANN}>"], subject="Question",
                          at_ms=int((now - timedelta(hours=5)).timestamp() * 1000))
    g.add_message(ANN, sender=f"Ann <{ANN}>", to=[lee], cc=[kim], subject="Re: Question", labels=["SENT"],
                          at_ms=int((now - timedelta(hours=4)).timestamp() * 1000))
    meeting = c.create(ANN, summary="Call with Lee", start=now - timedelta(hours=3), end=now - timedelta(hours=2),
                       attendees=[lee.capitalize()])
    world.sync("hubspot_main", "contacts")
    world.sync("gmail_main", "messages")
    world.sync("calendar_main", "events")

    lee_tl = world.timeline_of(lee)
    assert [(a["type"], a["subject"], a["source"]) for a in lee_tl] == [
        ("email", "Question", "gmail_main"), ("email", "Re: Question", "gmail_main"),
        ("meeting", "Call with Lee", "calendar_main")]
    assert [a["occurred_at"] for a in lee_tl] == sorted(a["occurred_at"] for a in lee_tl)
    assert [a["direction"] for a in lee_tl[:2]] == ["inbound", "outbound"]
    assert [a["subject"] for a in world.timeline_of(kim)] == ["Re: Question"], "cc'd: on kim's timeline too"

    # the meeting is cancelled: still on the timeline, once, with its new status
    c.cancel(ANN, meeting)
    world.sync("calendar_main", "events")
    assert [(a["subject"], a["status"]) for a in world.timeline_of(lee)][-1] == ("Call with Lee", "cancelled")
    assert len(world.timeline_of(lee)) == 3


def test_a_contact_created_after_its_mail_picks_the_mail_up(world: World) -> None:
    newcomer = "newcomer@fresh-customer.example"
    world.gmail.store.add_message(ANN, sender=f"New Comer <{newcomer}>", to=[ANN], subject="Hello there")
    world.sync("gmail_main", "messages")
    world.sync("hubspot_main", "contacts")
    world.hs.store.create("contacts", 1, {"email": newcomer, "firstname": "New", "lastname": "Comer"})
    world.sync("hubspot_main", "contacts")
    assert [a["subject"] for a in world.timeline_of(newcomer)] == ["Hello there"]
