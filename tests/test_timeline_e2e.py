"""Issue 7 end to end, on SQLite and PostgreSQL: three HubSpot contacts at two companies, and the
same people in the Gmail, Google Calendar, Microsoft 365 (Graph), Twilio and Aircall sandboxes,
each on real loopback HTTP, synced by the real engine (`Hub.engine.run()`: every enabled
instance, in plan order). Participants are written the ways vendors and people write them
(display names, upper case, national and international numbers). Each contact's timeline then
holds exactly its emails, meetings and calls, in time order, on the right contact and account;
the team's own addresses and numbers never become contacts.

Then Ann's mailbox moves from Gmail to Microsoft 365: the same mails (same RFC 822 Message-ID)
are in her Graph mailbox, the Gmail instance is disabled and a Graph instance for her mailbox
enabled in the config. After the next sync every timeline is unchanged (the hub dedupes mail
across connectors by Message-ID), and new mail arrives through Graph."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.aircall.sandbox import API_ID, API_TOKEN, AircallStore
from connectors.aircall.sandbox import SandboxServer as AircallSandbox
from connectors.gmail.sandbox import GmailSandbox, GmailStore
from connectors.google_calendar.sandbox import CalendarSandbox, CalendarStore
from connectors.hubspot.sandbox import SandboxServer as HubSpotSandbox
from connectors.hubspot.sandbox import SandboxStore
from connectors.microsoft_graph.sandbox import GraphStore
from connectors.microsoft_graph.sandbox import SandboxServer as GraphSandbox
from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, TwilioStore
from connectors.twilio.sandbox import SandboxServer as TwilioSandbox
from hub.activities import timeline
from hub.app import Hub
from hub.config import parse_config
from state.schema import accounts, activities, activity_participants, contacts

# the team (internal: never contacts)
ANN, BOB = "ann@ourco.example", "bob@ourco.example"
ANN_NAME, BOB_NAME = "Ann Lee", "Bob Marsh"
TWILIO_LINE, AIRCALL_LINE = "+14155550100", "+1 415-555-0101"
AIRCALL_AGENT = {"id": 456, "name": ANN_NAME, "email": ANN}
INTERNAL = ["@ourco.example", TWILIO_LINE, AIRCALL_LINE]
HS_TOKEN, GMAIL_TOKEN, CAL_TOKEN, GRAPH_TOKEN = ("pat-na1-e2e-0001", "ya29.e2e-mail-0002", "ya29.e2e-cal-0003",
                                                 "eyJ0eXAi.e2e-graph-0004")
# the customers, as HubSpot holds them: Lee and Kim at Northwind, Sam at Globex (in London)
LEE = {"email": "lee.park@northwind.example", "firstname": "Lee", "lastname": "Park", "phone": "(646) 555-0142"}
KIM = {"email": "kim.ito@northwind.example", "firstname": "Kim", "lastname": "Ito", "phone": "212.555.0199"}
SAM = {"email": "sam.okafor@globex.example", "firstname": "Sam", "lastname": "Okafor", "phone": "+44 20 7946 0958"}
LEE_E164, KIM_E164, SAM_E164 = "+16465550142", "+12125550199", "+442079460958"
STRANGER = "Pat Doe <pat@unknown-vendor.example>"  # matches no contact: kept on the activity, no contact made


@dataclass
class Mail:
    """One mail in Ann's mailbox, as Gmail holds it now and Graph will hold it after the move."""

    folder: str  # inbox | sentitems
    sender: tuple[str, str]  # (address as written, display name)
    to: list[tuple[str, str]]
    subject: str
    at: datetime
    message_id: str
    cc: list[tuple[str, str]] = field(default_factory=list)


def _hdr(people: list[tuple[str, str]]) -> str:
    return ", ".join(f'"{n}" <{a}>' if "," in n else f"{n} <{a}>" if n else a for a, n in people)


class World:
    """The sandboxes, their stores, and a Hub built over them from a config that can change."""

    def __init__(self, db_url: str, hs: HubSpotSandbox, gmail: GmailSandbox, cal: CalendarSandbox,
                 graph: GraphSandbox, twilio: TwilioSandbox, aircall: AircallSandbox) -> None:
        self.db_url, self.hs, self.gmail, self.cal = db_url, hs, gmail, cal
        self.graph, self.twilio, self.aircall = graph, twilio, aircall
        self.gstore: GmailStore = gmail.store
        self.cstore: CalendarStore = cal.store
        self.mstore: GraphStore = graph.store
        self.tstore: TwilioStore = twilio.store
        self.astore: AircallStore = aircall.store
        self.ann_on_graph = False  # where Ann's mailbox is read: Gmail, or (after the move) Graph

    def config(self) -> dict[str, Any]:
        fast = {"requests_per_second": 10_000, "internal": INTERNAL}
        return {"database": self.db_url, "sync": {"retry_backoff_seconds": 0}, "connectors": {
            "hubspot": {"kind": "hubspot", "base_url": self.hs.url, "auth": {"token": HS_TOKEN},
                        "search_lag_ms": 0, "streams": ["companies", "contacts"]},
            "gmail": {"kind": "gmail", "base_url": self.gmail.url, "enabled": not self.ann_on_graph, **fast,
                      "mailboxes": [{"address": ANN, "access_token": GMAIL_TOKEN}]},
            "calendar": {"kind": "google_calendar", "base_url": self.cal.url, **fast,
                         "calendars": [{"address": ANN, "access_token": CAL_TOKEN}]},
            "m365": {"kind": "microsoft_graph", "base_url": self.graph.url, "auth": {"token": GRAPH_TOKEN},
                     "mailboxes": [BOB], **fast},
            "m365_ann": {"kind": "microsoft_graph", "base_url": self.graph.url, "auth": {"token": GRAPH_TOKEN},
                         "enabled": self.ann_on_graph, "mailboxes": [ANN], **fast},
            "twilio": {"kind": "twilio", "base_url": self.twilio.url, "page_size": 50, **fast,
                       "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}},
            "aircall": {"kind": "aircall", "base_url": self.aircall.url, "settle_seconds": 0, **fast,
                        "auth": {"api_id": API_ID, "api_token": API_TOKEN}},
        }}

    def sync(self) -> dict[str, tuple[int, int]]:
        """One `crmhub sync` of every enabled instance: `instance.stream` -> (read, written)."""
        hub = Hub(parse_config(self.config()), sleep=lambda _s: None).ready()
        try:
            results = hub.engine.run()
        finally:
            hub.close()
        assert [(r.connector, r.stream, r.status, r.error, r.failed) for r in results if r.status != "ok" or r.failed] \
            == [], "every stream synced, no record failed"
        return {f"{r.connector}.{r.stream}": (r.read, r.written) for r in results}

    # -- reading the canonical store -------------------------------------------------------------

    def query(self, stmt: Any) -> list[dict[str, Any]]:
        hub = Hub(parse_config(self.config()))
        try:
            with hub.db.connect() as c:
                return [dict(r) for r in c.execute(stmt).mappings()]
        finally:
            hub.close()

    def contact_ids(self) -> dict[str, str]:
        return {r["email"]: r["id"] for r in self.query(select(contacts.c.email, contacts.c.id))}

    def account_of(self) -> dict[str, str | None]:
        """contact email -> its account's id (HubSpot's company, through associatedcompanyid)."""
        q = select(contacts.c.email, accounts.c.id.label("account_id")).join(
            accounts, accounts.c.id == contacts.c.account_id, isouter=True)
        return {r["email"]: r["account_id"] for r in self.query(q)}

    def timeline_of(self, email: str) -> list[dict[str, Any]]:
        hub = Hub(parse_config(self.config()))
        try:
            with hub.db.connect() as c:
                cid = c.execute(select(contacts.c.id).where(contacts.c.email == email)).scalar_one()
                items = timeline(c, cid)
                owners = {aid: cid for aid, cid in c.execute(select(activities.c.id, activities.c.contact_id).where(
                    activities.c.id.in_([a["id"] for a in items])))}
        finally:
            hub.close()
        for a in items:
            a["contact_id"] = owners[a["id"]]
            a["occurred_at"] = _utc(a["occurred_at"])
        return items


def _utc(dt: datetime) -> datetime:
    """SQLite hands timestamps back naive (they are stored in UTC), PostgreSQL aware."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    hs_store = SandboxStore(contacts=0, companies=2, deals=0, engagements=0)
    with HubSpotSandbox(hs_store, token=HS_TOKEN) as hs, \
            GmailSandbox(GmailStore({ANN: GMAIL_TOKEN}, 0)) as gmail, \
            CalendarSandbox(CalendarStore({ANN: CAL_TOKEN}, 0)) as cal, \
            GraphSandbox(GraphStore([BOB, ANN], messages=0, events=0), token=GRAPH_TOKEN) as graph, \
            TwilioSandbox(TwilioStore(0, our_numbers=[TWILIO_LINE])) as twilio, \
            AircallSandbox(AircallStore(0)) as aircall:
        yield World(db_url, hs, gmail, cal, graph, twilio, aircall)


def _gmail(w: World, m: Mail) -> None:
    """Deliver a mail to Ann's Gmail, headers as a mail client writes them (display forms, any case)."""
    headers = [("From", _hdr([m.sender])), ("To", _hdr(m.to)), *([("Cc", _hdr(m.cc))] if m.cc else []),
               ("Subject", m.subject), ("Date", format_datetime(m.at)), ("Message-ID", m.message_id)]
    w.gstore.add_message(ANN, headers=headers, at_ms=int(m.at.timestamp() * 1000),
                         labels=["SENT"] if m.folder == "sentitems" else ["INBOX"])


def _graph(w: World, mailbox: str, m: Mail) -> str:
    return w.mstore.deliver(mailbox, m.folder, sender=m.sender, to=m.to, cc=m.cc, subject=m.subject, sent_at=m.at,
                            message_id=m.message_id)


def _twilio(w: World, at: datetime, direction: str, outside: str) -> None:
    inbound = direction == "inbound"
    ends: dict[str, Any] = {"from": outside if inbound else TWILIO_LINE, "to": TWILIO_LINE if inbound else outside}
    w.tstore.add_call(at, status="completed", direction="inbound" if inbound else "outbound-api", **ends)


def _aircall(w: World, at: datetime, direction: str, raw_digits: str) -> None:
    started = int(at.timestamp())
    [cid] = w.astore.create(1, done=True, started_at=started, answered_at=started + 5,
                            direction=direction, raw_digits=raw_digits, missed_call_reason=None,
                            user=dict(AIRCALL_AGENT), number={"id": 790, "digits": AIRCALL_LINE, "name": "SF office"},
                            participants=[{"phone_number": raw_digits, "type": "external"},
                                          {"id": AIRCALL_AGENT["id"], "name": ANN_NAME, "type": "user"}])
    w.astore.end(cid, duration=95)  # answered, 95 s


def _customers(w: World) -> None:
    north, globex = w.hs.store.ids("companies")
    for person, company in ((LEE, north), (KIM, north), (SAM, globex)):
        w.hs.store.create("contacts", 1, {**person, "associatedcompanyid": company})


def _t0() -> datetime:
    return (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def test_each_contacts_timeline_is_exact_and_survives_moving_the_mailbox_to_microsoft_365(world: World) -> None:
    w = world
    _customers(w)
    t0 = _t0()

    def at(h: int) -> datetime:
        return t0 + timedelta(hours=h)

    ann, bob = (ANN, ANN_NAME), (BOB, BOB_NAME)
    ann_mail = [  # Ann's mailbox: in Gmail now, in Microsoft 365 after the move
        Mail("inbox", ("LEE.PARK@NORTHWIND.EXAMPLE", "Park, Lee"), [ann], "Pricing question", at(0),
             "<pq-1@northwind.example>", cc=[("pat@unknown-vendor.example", "Pat Doe")]),
        Mail("sentitems", ann, [("Lee.Park@Northwind.example", "")], "Re: Pricing question", at(1),
             "<pq-2@ourco.example>", cc=[(KIM["email"], "Kim Ito")]),
        Mail("inbox", (SAM["email"], "Sam Okafor"), [ann], "Intro from Globex", at(7), "<intro-3@globex.example>"),
    ]
    for m in ann_mail:
        _gmail(w, m)
    _twilio(w, at(2), "inbound", LEE_E164)
    w.cstore.create(ANN, summary="Pricing walkthrough", start=at(3), end=at(3) + timedelta(minutes=45),
                    attendees=["Lee.Park@Northwind.Example", KIM["email"].upper()])
    _aircall(w, at(4), "outbound", "+1 646-555-0142")
    # Bob's mailbox and calendar are in Microsoft 365 all along
    _graph(w, BOB, Mail("inbox", ("KIM.ITO@northwind.example", "Kim Ito"), [bob], "Contract redlines", at(5),
                        "<cr-4@northwind.example>"))
    w.mstore.add_event(BOB, subject="Contract review", start=at(6), minutes=60,
                       attendees=[("Sam.Okafor@Globex.example", "Sam Okafor")])
    _graph(w, BOB, Mail("sentitems", bob, [(SAM["email"], "Okafor, Sam")], "Globex proposal", at(8),
                        "<gp-5@ourco.example>"))
    _twilio(w, at(9), "outbound", SAM_E164)
    _aircall(w, at(10), "inbound", "+44 20 7946 0958")
    _aircall(w, at(11), "inbound", "+1 212-555-0199")
    _twilio(w, at(12), "outbound", "+12125550199")

    ran = w.sync()
    assert set(ran) == {"hubspot.companies", "hubspot.contacts", "gmail.messages", "calendar.events",
                        "m365.messages", "m365.events", "twilio.calls", "aircall.calls"}
    ids, account = w.contact_ids(), w.account_of()
    assert set(ids) == {LEE["email"], KIM["email"], SAM["email"]}, "the team and strangers never become contacts"
    assert account[LEE["email"]] == account[KIM["email"]] != account[SAM["email"]] and None not in account.values()

    def row(h: int, kind: str, source: str, subject: str | None, direction: str, status: str,
            owner: dict[str, str]) -> tuple[Any, ...]:
        return at(h), kind, source, subject, direction, status, ids[owner["email"]], account[owner["email"]]

    expected = {
        LEE["email"]: [
            row(0, "email", "gmail", "Pricing question", "inbound", "received", LEE),
            row(1, "email", "gmail", "Re: Pricing question", "outbound", "sent", LEE),
            row(2, "call", "twilio", None, "inbound", "completed", LEE),
            row(3, "meeting", "calendar", "Pricing walkthrough", "outbound", "scheduled", LEE),
            row(4, "call", "aircall", None, "outbound", "completed", LEE),
        ],
        KIM["email"]: [
            row(1, "email", "gmail", "Re: Pricing question", "outbound", "sent", LEE),  # cc'd: Lee's mail
            row(3, "meeting", "calendar", "Pricing walkthrough", "outbound", "scheduled", LEE),  # attendee
            row(5, "email", "m365", "Contract redlines", "inbound", "received", KIM),
            row(11, "call", "aircall", None, "inbound", "completed", KIM),
            row(12, "call", "twilio", None, "outbound", "completed", KIM),
        ],
        SAM["email"]: [
            row(6, "meeting", "m365", "Contract review", "outbound", "scheduled", SAM),
            row(7, "email", "gmail", "Intro from Globex", "inbound", "received", SAM),
            row(8, "email", "m365", "Globex proposal", "outbound", "sent", SAM),
            row(9, "call", "twilio", None, "outbound", "completed", SAM),
            row(10, "call", "aircall", None, "inbound", "completed", SAM),
        ],
    }

    def shown(email: str) -> list[tuple[Any, ...]]:
        return [(a["occurred_at"], a["type"], a["source"], a["subject"], a["direction"], a["status"],
                 a["contact_id"], a["account_id"]) for a in w.timeline_of(email)]

    def masked(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        # a Google Calendar meeting's direction is checked last (see the end of the test)
        return [(*r[:4], "?" if r[2] == "calendar" else r[4], *r[5:]) for r in rows]

    before = {email: w.timeline_of(email) for email in expected}
    for email, rows in expected.items():
        assert masked(shown(email)) == masked(rows), email

    # the team (addresses, lines, the Aircall user) is internal on every activity it is on, never a contact
    p = activity_participants.c
    parts = w.query(select(p.role, p.email, p.phone, p.user_id, p.internal, p.contact_id))
    ours = [x for x in parts if (x["email"] or "").endswith("@ourco.example")
            or x["phone"] in (TWILIO_LINE, "+14155550101") or x["user_id"] == str(AIRCALL_AGENT["id"])]
    assert ours and all(x["internal"] and x["contact_id"] is None for x in ours)
    stranger = [x for x in parts if x["email"] == "pat@unknown-vendor.example"]
    assert [(x["role"], x["internal"], x["contact_id"]) for x in stranger] == [("cc", False, None)]
    assert {x["phone"] for x in parts if x["phone"] and not x["internal"]} == {LEE_E164, KIM_E164, SAM_E164}

    # a second sync with nothing new changes nothing
    w.sync()
    assert {email: w.timeline_of(email) for email in expected} == before

    # Ann's mailbox moves to Microsoft 365: the same mails are there (same Message-IDs), the Gmail
    # instance is disabled and the Graph instance for her mailbox enabled
    for m in ann_mail:
        _graph(w, ANN, m)
    w.ann_on_graph = True
    ran = w.sync()
    assert "gmail.messages" not in ran and {"m365_ann.messages", "m365_ann.events"} <= set(ran)
    assert ran["m365_ann.messages"] == (3, 0), "Graph read Ann's three mails; the hub had each already"
    after = {email: w.timeline_of(email) for email in expected}
    assert after == before, "the same mail through Graph: no doubles, nothing moved or changed"
    n_activities = w.query(select(func.count().label("n")).select_from(activities))[0]["n"]
    assert n_activities == 15 - 2, "15 timeline rows, two of them on two timelines"

    # new mail now comes through Graph, onto the same timeline
    _graph(w, ANN, Mail("inbox", ("lee.park@NORTHWIND.example", "Lee Park"), [ann], "Signed order form", at(13),
                        "<so-6@northwind.example>"))
    w.sync()
    expected[LEE["email"]].append(row(13, "email", "m365_ann", "Signed order form", "inbound", "received", LEE))
    assert masked(shown(LEE["email"])) == masked(expected[LEE["email"]])
    assert w.contact_ids() == ids

    # direction is the team's point of view on every vendor: Graph says `outbound` for a meeting the
    # mailbox's owner organised (connectors/microsoft_graph/items.py, event_activity); Google Calendar
    # must say the same of the same meeting, or moving a calendar between vendors changes the timeline
    calendar_dirs = {r[4] for email in expected for r in shown(email) if r[2] == "calendar"}
    assert calendar_dirs == {"outbound"}
    for email, rows in expected.items():
        assert shown(email) == rows, email


def test_a_mail_keeps_its_time_whichever_vendor_reads_the_mailbox(world: World) -> None:
    """Gmail's `internalDate` is when Google accepted the mail, Graph's `sentDateTime` its RFC 822
    Date. The same mail must sit at the same point of the timeline whichever vendor brought it."""
    w = world
    _customers(w)
    sent = _t0()
    mail = Mail("inbox", (LEE["email"], "Lee Park"), [(ANN, ANN_NAME)], "Delivery dates", sent, "<dd-1@northwind.example>")
    accepted = sent + timedelta(seconds=90)  # Google accepted it a minute and a half after the sender's Date
    w.gstore.add_message(ANN, headers=[("From", _hdr([mail.sender])), ("To", _hdr(mail.to)), ("Subject", mail.subject),
                                       ("Date", format_datetime(sent)), ("Message-ID", mail.message_id)],
                         at_ms=int(accepted.timestamp() * 1000), labels=["INBOX"])
    _graph(w, ANN, mail)
    w.sync()  # Ann's mailbox through Gmail
    [item] = w.timeline_of(LEE["email"])
    assert (item["source"], item["subject"]) == ("gmail", "Delivery dates")

    # what Ann's mailbox gives through Graph for the same mail (read only, nothing written)
    w.ann_on_graph = True
    hub = Hub(parse_config(w.config()), sleep=lambda _s: None)
    try:
        graph = hub.factory.build("m365_ann")
        try:
            [event] = [r.activity for page in graph.read("messages", None) for r in page.records if r.activity]
        finally:
            graph.close()
    finally:
        hub.close()
    assert event.details["message_id"] == mail.message_id
    through_graph = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))
    assert through_graph == sent
    assert item["occurred_at"] == through_graph


def test_a_colleagues_mail_to_a_customer_is_outbound_whichever_mailbox_brings_it(world: World) -> None:
    """Bob (Microsoft 365) writes to Lee and copies Ann (Gmail): one mail, one activity, and it went
    out from the team to the customer, whether Ann's copy (Inbox) or Bob's (Sent Items) is read first."""
    w = world
    _customers(w)
    when = _t0()
    mail = Mail("sentitems", (BOB, BOB_NAME), [(LEE["email"], "Lee Park")], "Revised quote", when,
                "<rq-1@ourco.example>", cc=[(ANN, ANN_NAME)])
    _graph(w, BOB, mail)
    _gmail(w, Mail("inbox", mail.sender, mail.to, mail.subject, when, mail.message_id, cc=mail.cc))
    ran = w.sync()  # Gmail comes first in the config, so in the plan: Ann's Inbox copy is read first
    assert ran["gmail.messages"] == (1, 1) and ran["m365.messages"] == (1, 0), "one mail, one activity"
    [item] = w.timeline_of(LEE["email"])
    assert (item["type"], item["subject"], item["occurred_at"]) == ("email", "Revised quote", when)
    assert item["contact_id"] == w.contact_ids()[LEE["email"]]
    assert (item["direction"], item["status"]) == ("outbound", "sent")
