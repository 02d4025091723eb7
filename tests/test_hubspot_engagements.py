"""HubSpot engagements (calls, emails, meetings, notes, tasks) as activities; owners; pipelines.

First against a strict respx fake in HubSpot's documented shapes (list pages with
``associations``; search pages without; associations v4 ``batch/read`` answers), then against
the sandbox on loopback, then end to end into the hub's activity timeline on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import func, select

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.config import parse_config
from hub.sdk import FatalError, Page
from state.schema import activities, activity_participants, external_links
from tests.test_hubspot_connector import (
    BASE,
    TOKEN,
    FakeClock,
    clock,
    connect,
    hubspot,
    incremental,
    list_page,
    mocked,
    read,
    search_page,
)

__all__ = ["clock", "hubspot"]  # fixtures, imported for pytest

CALLS = "/crm/v3/objects/calls"
EMAILS = "/crm/v3/objects/emails"


# ---- builders: HubSpot's engagement shapes ---------------------------------------------------------
def engagement(rid: int, props: dict[str, Any], contact: str | None = "501", company: str | None = "5001",
               deal: str | None = None, kind: str = "call") -> dict[str, Any]:
    rec: dict[str, Any] = {"id": str(rid), "properties": {"hs_object_id": str(rid),
                                                          "hs_lastmodifieddate": "2024-06-01T10:00:00.000Z", **props},
                           "createdAt": "2024-06-01T09:00:00.000Z", "updatedAt": "2024-06-01T10:00:00.000Z",
                           "archived": False}
    links = {}
    for to, ext, label in (("contacts", contact, f"{kind}_to_contact"), ("companies", company, f"{kind}_to_company"),
                           ("deals", deal, f"{kind}_to_deal")):
        if ext:
            links[to] = {"results": [{"id": ext, "type": label}]}
    if links:
        rec["associations"] = links
    return rec


def call(rid: int, **props: Any) -> dict[str, Any]:
    base = {"hs_timestamp": "2024-06-01T09:30:00.000Z", "hs_call_title": "Pricing call",
            "hs_call_direction": "OUTBOUND", "hs_call_status": "COMPLETED", "hs_call_duration": "125000",
            "hs_call_from_number": "+1 617 555 0100", "hs_call_to_number": "(415) 555-0123",
            "hubspot_owner_id": "41629779"}
    return engagement(rid, {**base, **props}, deal="9001")


def v4(results: dict[str, list[int]], missing: Sequence[str] = (), type_id: int = 194) -> httpx.Response:
    body: dict[str, Any] = {"status": "COMPLETE", "startedAt": "2024-06-01T00:00:00.000Z",
                            "completedAt": "2024-06-01T00:00:00.100Z",
                            "results": [{"from": {"id": k}, "to": [{"toObjectId": t, "associationTypes": [
                                {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]} for t in v]}
                                for k, v in results.items()]}
    if missing:
        body |= {"numErrors": len(missing), "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND",
                                                       "message": f"No associations found for {m}",
                                                       "context": {"fromObjectId": [m]}} for m in missing]}
    return httpx.Response(207 if missing else 200, json=body)


def events(pages: list[Page]) -> list[Any]:
    return [r.activity for p in pages for r in p.records]


# ---- paging with associations ------------------------------------------------------------------------
def test_full_load_pages_calls_with_their_associations(hubspot: respx.Router, clock: FakeClock) -> None:
    first = [call(20_000 + n) for n in range(100)]
    second = [call(20_100 + n, hs_call_direction="INBOUND", hs_call_status="NO_ANSWER") for n in range(20)]
    hubspot.post(f"{CALLS}/search").respond(json=search_page([]))  # the probe and the first incremental pass
    listed = hubspot.get(CALLS, params={"archived": "false"}).mock(side_effect=[
        httpx.Response(200, json=list_page(first, after="MjAwOTk", path=CALLS)),
        httpx.Response(200, json=list_page(second))])
    hubspot.get(CALLS, params={"archived": "true"}).respond(json=list_page([]))

    pages = read(connect(clock, mocked(hubspot)), "calls")

    params = listed.calls[0].request.url.params
    assert (params["limit"], params["associations"]) == ("100", "contacts,companies,deals")
    assert {"hs_timestamp", "hs_call_direction", "hs_call_status"} <= set(params["properties"].split(","))
    assert "hs_call_body" not in params["properties"], "bodies are read only when excerpts are kept"
    assert listed.calls[1].request.url.params["after"] == "MjAwOTk"
    got = events(pages)
    assert len(got) == 120 and all(e is not None for e in got)
    ev = got[0]
    assert (ev.type, ev.external_id, ev.occurred_at, ev.subject, ev.status, ev.direction, ev.duration_s) == (
        "call", "20000", "2024-06-01T09:30:00.000Z", "Pricing call", "completed", "outbound", 125)
    assert ev.refs == {"contact": "501", "account": "5001", "opportunity": "9001"}
    assert [(p.role, p.phone, p.user_id) for p in ev.participants] == [
        ("caller", "+1 617 555 0100", None), ("callee", "(415) 555-0123", None), ("agent", None, "41629779")]
    assert (got[100].direction, got[100].status) == ("inbound", "missed")
    assert pages[0].next_cursor == {"phase": "full", "after": "MjAwOTk", "since": 0, "seen": []}


def test_an_incremental_page_fetches_associations_in_three_batch_reads(
        hubspot: respx.Router, clock: FakeClock) -> None:
    """Search returns no associations: one v4 batch read per associated type, for the page's ids."""
    found = [call(7, hs_lastmodifieddate="2024-06-01T10:00:00.000Z"), call(8), call(9)]
    for r in found:
        r.pop("associations")
    hubspot.post(f"{CALLS}/search").respond(json=search_page(found))
    routes = {
        "contacts": hubspot.post("/crm/v4/associations/calls/contacts/batch/read").mock(
            return_value=v4({"7": [501, 502], "8": [503]}, missing=["9"])),
        "companies": hubspot.post("/crm/v4/associations/calls/companies/batch/read").mock(
            return_value=v4({"7": [5001]}, missing=["8", "9"], type_id=182)),
        "deals": hubspot.post("/crm/v4/associations/calls/deals/batch/read").mock(
            return_value=v4({}, missing=["7", "8", "9"], type_id=206)),
    }
    hubspot.get(CALLS, params={"archived": "true"}).respond(json=list_page([]))

    pages = read(connect(clock, mocked(hubspot)), "calls", incremental(1_717_200_000_000))

    for route in routes.values():
        assert json.loads(route.calls[0].request.content) == {"inputs": [{"id": "7"}, {"id": "8"}, {"id": "9"}]}
        assert route.call_count == 1
    got = {e.external_id: e.refs for e in events(pages)}
    assert got == {"7": {"contact": "501", "account": "5001"}, "8": {"contact": "503"}, "9": {}}
    assert pages[0].requests == 4, "the search and its three association reads"


def test_an_engagement_without_a_usable_timestamp_is_rejected_and_the_rest_read(
        hubspot: respx.Router, clock: FakeClock) -> None:
    good, missing, garbled = call(1), call(2, hs_timestamp=None), call(3, hs_timestamp="last tuesday")
    hubspot.get(CALLS, params={"archived": "false"}).respond(json=list_page([good, missing, garbled]))
    hubspot.post(f"{CALLS}/search").respond(json=search_page([]))
    hubspot.get(CALLS, params={"archived": "true"}).respond(json=list_page([]))

    pages = read(connect(clock, mocked(hubspot)), "calls", {"phase": "full", "after": None, "since": 0})

    assert [r.external_id for p in pages for r in p.records] == ["1"]
    reasons = {r.external_id: r.reason for p in pages for r in p.rejected}
    assert reasons == {"2": "HubSpot calls 2: call 2 has no hs_timestamp",
                       "3": "HubSpot calls 3: 'last tuesday' is not a date"}


def test_an_html_page_where_the_list_json_was_expected_is_a_clear_error(
        hubspot: respx.Router, clock: FakeClock) -> None:
    hubspot.get(CALLS, params={"archived": "false"}).respond(
        200, text="<!DOCTYPE html><html><body>Maintenance</body></html>", headers={"Content-Type": "text/html"})
    with pytest.raises(FatalError, match=r"not JSON.*Maintenance"):
        read(connect(clock, mocked(hubspot)), "calls", {"phase": "full", "after": None, "since": 0})


def test_reading_slows_down_when_the_window_runs_low(hubspot: respx.Router, clock: FakeClock) -> None:
    low = {"X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "5",
           "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    hubspot.get(CALLS, params={"archived": "false"}).mock(side_effect=[
        httpx.Response(200, json=list_page([call(1)], after="Mg"), headers=low),
        httpx.Response(200, json=list_page([call(2)], after="Mw"), headers=low),
        httpx.Response(200, json=list_page([call(3)]), headers=low)])
    hubspot.post(f"{CALLS}/search").respond(json=search_page([]))
    hubspot.get(CALLS, params={"archived": "true"}).respond(json=list_page([]), headers=low)

    read(connect(clock, mocked(hubspot)), "calls", {"phase": "full", "after": None, "since": 0})

    # 5 left of 100 in 10 s: one request every 2 s (the search sends no headers and is not paced)
    assert clock.paced[:2] == pytest.approx([2.0, 2.0]) and clock.slept == []


# ---- each type as an activity ----------------------------------------------------------------------------
def test_each_engagement_type_becomes_its_activity(hubspot: respx.Router, clock: FakeClock) -> None:
    headers = json.dumps({"from": {"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee"},
                          "to": [{"email": "sam@ourco.example", "firstName": "Sam"}],
                          "cc": [{"email": "cfo@example.com"}], "bcc": []})
    samples = {
        "emails": engagement(11, {"hs_timestamp": "1717232400000", "hs_email_subject": "Re: pricing",
                                  "hs_email_direction": "INCOMING_EMAIL", "hs_email_status": "SENT",
                                  "hs_email_headers": headers, "hs_email_text": "Body text"}, kind="email"),
        "meetings": engagement(12, {"hs_timestamp": "2024-06-01T09:00:00Z", "hs_meeting_title": "QBR",
                                    "hs_meeting_start_time": "2024-06-01T09:00:00Z",
                                    "hs_meeting_end_time": "2024-06-01T09:45:00Z", "hs_meeting_outcome": "NO_SHOW",
                                    "hubspot_owner_id": "41629780"}, kind="meeting"),
        "notes": engagement(13, {"hs_timestamp": "2024-06-01T09:00:00Z",
                                 "hs_note_body": "<p>Wants <b>annual</b> billing.</p>"}, contact=None, kind="note"),
        "tasks": engagement(14, {"hs_timestamp": "2024-06-03T00:00:00Z", "hs_task_subject": "Send quote",
                                 "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH"}, deal="9002",
                            kind="task"),
    }
    got = {}
    for stream, rec in samples.items():
        path = f"/crm/v3/objects/{stream}"
        hubspot.get(path, params={"archived": "false"}).respond(json=list_page([rec]))
        hubspot.post(f"{path}/search").respond(json=search_page([]))
        hubspot.get(path, params={"archived": "true"}).respond(json=list_page([]))
        pages = read(connect(clock, mocked(hubspot), body_excerpt_chars=12), stream,
                     {"phase": "full", "after": None, "since": 0})
        (got[stream],) = events(pages)

    email = got["emails"]
    assert (email.type, email.direction, email.status, email.subject, email.occurred_at) == (
        "email", "inbound", "received", "Re: pricing", "2024-06-01T09:00:00.000Z")
    assert [(p.role, p.email, p.name) for p in email.participants] == [
        ("from", "ann@example.com", "Ann Lee"), ("to", "sam@ourco.example", "Sam"), ("cc", "cfo@example.com", None)]
    assert email.body_excerpt == "Body text"
    meeting = got["meetings"]
    assert (meeting.status, meeting.duration_s, meeting.ended_at) == ("no_show", 2700, "2024-06-01T09:45:00.000Z")
    assert [(p.role, p.user_id) for p in meeting.participants] == [("organizer", "41629780")]
    note = got["notes"]
    assert (note.type, note.body_excerpt, note.refs) == ("note", "Wants annual", {"account": "5001"})
    task = got["tasks"]
    assert (task.type, task.status, task.subject, task.details["priority"]) == (
        "task", "not_started", "Send quote", "HIGH")
    assert task.refs == {"contact": "501", "account": "5001", "opportunity": "9002"}


# ---- the sandbox: engagements, owners, pipelines ----------------------------------------------------------
def test_the_sandbox_engagements_read_in_full_and_incrementally(clock: FakeClock) -> None:
    store = SandboxStore(contacts=400, engagements=250)
    with SandboxServer(store, token=TOKEN) as server:
        pages = read(connect(clock, base_url=server.url), "meetings")
        got = {e.external_id: e for e in events(pages)}
        assert sorted(got) == store.ids("meetings") and len(got) == 250
        first = got[store.ids("meetings")[0]]
        assert first.refs == {"contact": "1001", "account": "5000001", "opportunity": "9000001"}
        assert got[store.ids("meetings")[1]].refs == {"contact": "1002", "account": "5000002"}

        changed = store.modify("meetings", count=30, properties={"hs_meeting_outcome": "CANCELED"})
        store.reset_stats()
        later = read(connect(clock, base_url=server.url), "meetings", pages[-1].next_cursor)
        assert sorted(e.external_id for e in events(later)) == sorted(changed)
        assert all(e.status == "cancelled" and e.refs.get("contact") for e in events(later))
        reqs = store.stats()["requests"]
        assert reqs["POST meetings.associations.contacts"] == reqs["POST meetings.associations.deals"] == 1


def test_owners_page_through_and_map_owner_ids_to_people(hubspot: respx.Router, clock: FakeClock) -> None:
    def owner(oid: str, email: str, first: str, user: int, archived: bool = False) -> dict[str, Any]:
        return {"id": oid, "email": email, "type": "PERSON", "firstName": first, "lastName": "Doe", "userId": user,
                "userIdIncludingInactive": user, "createdAt": "2019-12-25T13:01:35.228Z",
                "updatedAt": "2023-08-22T13:40:26.790Z", "archived": archived}
    route = hubspot.get("/crm/v3/owners").mock(side_effect=[
        httpx.Response(200, json={"results": [owner("41629779", "jane@ourco.example", "Jane", 9586504)],
                                  "paging": {"next": {"after": "NDE2Mjk3Nzk", "link": "?after=NDE2Mjk3Nzk"}}}),
        httpx.Response(200, json={"results": [owner("41629780", "john@ourco.example", "John", 9586505)]})])
    conn = connect(clock, mocked(hubspot))
    try:
        owners = {o.id: o for o in conn.owners()}  # type: ignore[attr-defined]
    finally:
        conn.close()
    assert owners["41629779"].email == "jane@ourco.example" and owners["41629780"].name == "John Doe"
    assert owners["41629780"].user_id == "9586505"
    assert [c.request.url.params.get("after") for c in route.calls] == [None, "NDE2Mjk3Nzk"]
    assert route.calls[0].request.url.params["limit"] == "500"


def test_sandbox_owners_pipelines_and_check(clock: FakeClock) -> None:
    with SandboxServer(SandboxStore(contacts=20), token=TOKEN) as server:
        conn: Any = connect(clock, base_url=server.url)
        try:
            owners = list(conn.owners())
            pipelines = conn.pipelines("deals")
            described = conn.check()
        finally:
            conn.close()
    assert len(owners) == 4 and all(o.email and o.id.isdigit() for o in owners)
    assert [p.id for p in pipelines] == ["default", "7d3f1c52"]
    default, renewals = pipelines
    assert [s.id for s in default.stages][:2] == ["appointmentscheduled", "qualifiedtobuy"]
    assert default.stage_label("closedwon") == "Closed Won" and default.stages[-1].is_closed is True
    assert [s.id for s in renewals.stages] == ["1001", "1002", "1003"], "stage ids are strings, never an enum"
    assert all(isinstance(s.id, str) and isinstance(s.label, str) for p in pipelines for s in p.stages)
    assert "Sales Pipeline [default]: Appointment Scheduled [appointmentscheduled]" in described
    assert "Renewals [7d3f1c52]: Renewal due [1001]" in described


def test_check_still_passes_when_pipelines_are_not_readable(hubspot: respx.Router, clock: FakeClock) -> None:
    hubspot.get("/crm/v3/objects/contacts").respond(json=list_page([]))
    hubspot.get("/crm/v3/pipelines/deals").respond(403, json={
        "status": "error", "category": "MISSING_SCOPES",
        "message": "This app hasn't been granted all required scopes to make this call."})
    conn = connect(clock, mocked(hubspot))
    try:
        text = conn.check()
    finally:
        conn.close()
    assert text.startswith(f"token accepted by {BASE}; deal pipelines not readable")


# ---- end to end: engagements onto the hub's timeline --------------------------------------------------------
def test_engagements_land_on_the_timeline_linked_to_contacts_accounts_and_deals(
        db_url: str, tmp_path: Path) -> None:
    store = SandboxStore(contacts=60, engagements=40)
    with SandboxServer(store, token=TOKEN) as server:
        cfg = parse_config({"database": db_url, "connectors": {"hs": {
            "kind": "hubspot", "base_url": server.url, "auth": {"token": TOKEN}, "search_lag_ms": 0,
            "requests_per_second": 100_000}}})
        hub = Hub(cfg, sleep=lambda _s: None).ready()
        try:
            results = hub.engine.run("hs")
            assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
            by_stream = {r.stream: r for r in results}
            assert [by_stream[s].read for s in ("calls", "emails", "meetings", "notes", "tasks")] == [40] * 5
            with hub.db.connect() as c:
                assert c.execute(select(func.count()).select_from(activities)).scalar() == 200
                rows = {(r.type, r.external_id): r for r in c.execute(select(activities)).mappings()}
                links = {(r.entity, r.external_id): r.entity_id for r in c.execute(
                    select(external_links.c.entity, external_links.c.external_id, external_links.c.entity_id))}
                parts = c.execute(select(func.count()).select_from(activity_participants)).scalar()
            # call 0 is associated with contact 1001, company 5000001 and deal 9000001
            first = rows[("call", store.ids("calls")[0])]
            assert first.contact_id == links[("contact", "1001")]
            assert first.account_id == links[("account", "5000001")]
            assert first.opportunity_id == links[("opportunity", "9000001")]
            assert str(first.occurred_at)[:4] == "2023"
            assert all(r.contact_id is not None for r in rows.values()), "every engagement names its contact"
            assert parts and parts > 0

            again = hub.engine.run("hs")
            assert all(r.status == "ok" and r.written == 0 for r in again), "a re-run appends nothing"
        finally:
            hub.close()
