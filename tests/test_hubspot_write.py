"""The HubSpot connector's write side and rate limits: a strict respx fake of HubSpot's batch
endpoints, then the sandbox on loopback.

Batch shapes follow HubSpot's CRM v3 objects reference: inputs ``{"id"?, "idProperty"?,
"properties", "objectWriteTraceId"}``; answers ``{"status": "COMPLETE", "results": [...],
"startedAt", "completedAt"}``, and on 207 also ``numErrors`` and ``errors`` (``StandardError``:
``status``, ``category``, ``message``, ``context``).
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from connectors.hubspot.limits import DailyLimit
from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.sdk import AuthError, FatalError, RateLimited, RetriableError
from hub.sdk.connector import Connector
from tests.test_hubspot_connector import BASE, TOKEN, FakeClock, clock, connect, hubspot, mocked

__all__ = ["clock", "hubspot"]  # fixtures, imported for pytest

CONTACTS = "/crm/v3/objects/contacts"
DEALS = "/crm/v3/objects/deals"


# ---- builders -------------------------------------------------------------------------------------
def obj(rid: str, props: dict[str, Any] | None = None, trace: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rid, "properties": {"hs_object_id": rid, **(props or {})},
                           "createdAt": "2019-10-30T03:30:17.883Z", "updatedAt": "2019-12-07T16:50:06.678Z",
                           "archived": False, **extra}
    if trace:
        out["objectWriteTraceId"] = trace
    return out


def batch(results: list[dict[str, Any]], errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": "2024-06-01T00:00:00.000Z",
                            "completedAt": "2024-06-01T00:00:00.250Z"}
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    return body


def echo(status: int = 200, new: bool | None = None) -> Any:
    """A batch endpoint that succeeds for every input, echoing its trace id."""
    made = itertools.count(7001)

    def answer(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        results = []
        for i in inputs:
            extra = {} if new is None else {"new": new}
            rid = str(i["id"]) if "id" in i and "idProperty" not in i else str(next(made))
            results.append(obj(rid, i["properties"], i.get("objectWriteTraceId"), **extra))
        return httpx.Response(status, json=batch(results))
    return answer


def inputs(route: respx.Route) -> list[list[dict[str, Any]]]:
    return [json.loads(c.request.content)["inputs"] for c in route.calls]


def write(conn: Connector, stream: str, changes: list[Any]) -> list[Any]:
    try:
        return conn.write(stream, changes)
    finally:
        conn.close()


# ---- batching ---------------------------------------------------------------------------------------
def test_250_updates_are_three_batch_calls_of_100_100_50(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=echo())
    changes = [{"id": str(1000 + n), "fields": {"title": f"T{n}"}, "key": f"seq-{n}"} for n in range(250)]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [len(b) for b in inputs(route)] == [100, 100, 50]
    sent = [i for b in inputs(route) for i in b]
    assert sent[0] == {"id": "1000", "properties": {"jobtitle": "T0"}, "objectWriteTraceId": "seq-0"}
    assert [r.external_id for r in results] == [str(1000 + n) for n in range(250)]
    assert all(r.ok and not r.created for r in results) and [r.key for r in results][:2] == ["seq-0", "seq-1"]
    assert route.calls[0].request.extensions["crmhub.idempotent"] is True


def test_contact_creates_with_an_email_are_upserts_by_email(hubspot: respx.Router, clock: FakeClock) -> None:
    """A repeated create must not make a second contact: HubSpot has no idempotency key, but an
    upsert on the unique email is safe to send twice."""
    route = hubspot.post(f"{CONTACTS}/batch/upsert").mock(side_effect=echo(new=True))
    changes = [{"fields": {"email": f"p{n}@example.com", "first_name": "Ann"}} for n in range(250)]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [len(b) for b in inputs(route)] == [100, 100, 50]
    first = inputs(route)[0][0]
    assert (first["idProperty"], first["id"], first["properties"]) == (
        "email", "p0@example.com", {"email": "p0@example.com", "firstname": "Ann"})
    assert all(r.ok and r.created for r in results) and len({r.external_id for r in results}) == 250


def test_company_creates_are_not_retried_and_values_are_strings(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{DEALS}/batch/create").mock(side_effect=echo(status=201))
    change = {"fields": {"name": "Renewal", "amount": 1200.5, "close_date": datetime(2024, 6, 1, tzinfo=UTC).date(),
                         "stage": "closedwon", "owner_id": None}}

    (result,) = write(connect(clock, mocked(hubspot)), "deals", [change])

    (sent,) = inputs(route)[0]
    assert sent["properties"] == {"dealname": "Renewal", "amount": "1200.5", "closedate": "2024-06-01",
                                  "dealstage": "closedwon", "hubspot_owner_id": ""}
    assert "id" not in sent and result.ok and result.created
    assert route.calls[0].request.extensions["crmhub.idempotent"] is False


def test_the_same_id_twice_goes_in_two_batches_in_order(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=echo())
    changes = [{"id": "1", "properties": {"a": "1"}}, {"id": "2", "properties": {"a": "2"}},
               {"id": "1", "properties": {"a": "3"}}]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [[i["id"] for i in b] for b in inputs(route)] == [["1", "2"], ["1"]]
    assert all(r.ok for r in results)


def test_bad_changes_fail_alone_without_a_request(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=echo())
    changes: list[Any] = [{"id": "1", "fields": {"shoe_size": 9}}, "not a dict", {"op": "update", "fields": {}},
                          {"op": "merge", "id": "3"}, {"id": "2", "fields": {"first_name": "Bo"}}]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [r.ok for r in results] == [False, False, False, False, True]
    assert "no HubSpot property for the canonical field 'shoe_size'" in (results[0].error or "")
    assert "not an object" in (results[1].error or "") and "needs an id" in (results[2].error or "")
    assert "unknown op 'merge'" in (results[3].error or "")
    assert [[i["id"] for i in b] for b in inputs(route)] == [["2"]]


def test_streams_that_do_not_write_say_so(clock: FakeClock) -> None:
    with pytest.raises(FatalError, match="does not write 'calls'"):
        write(connect(clock), "calls", [{"id": "1", "properties": {}}])


# ---- per-record failures ------------------------------------------------------------------------------
def test_a_207_with_mixed_results_is_one_result_per_change(hubspot: respx.Router, clock: FakeClock) -> None:
    errors = [{"status": "error", "category": "OBJECT_NOT_FOUND",
               "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
               "context": {"ids": ["103"]}},
              {"status": "error", "category": "VALIDATION_ERROR",
               "message": 'Property values were not valid: [{"isValid":false,"message":"Email address x is '
                          'invalid","error":"INVALID_EMAIL","name":"email"}]', "context": {"ids": ["104"]}}]
    hubspot.post(f"{CONTACTS}/batch/update").respond(207, json=batch(
        [obj("102", trace="k2"), obj("101", trace="k1")], errors))  # results in no particular order
    changes = [{"id": str(100 + n), "properties": {"email": "x"}, "key": f"k{n}"} for n in range(1, 5)]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [(r.external_id, r.ok, r.key) for r in results] == [
        ("101", True, "k1"), ("102", True, "k2"), ("103", False, "k3"), ("104", False, "k4")]
    assert (results[2].error or "").startswith("OBJECT_NOT_FOUND: Could not get some CONTACT objects")
    assert "INVALID_EMAIL" in (results[3].error or "")


def test_an_error_naming_no_input_fails_the_inputs_nobody_reported_on(
        hubspot: respx.Router, clock: FakeClock) -> None:
    hubspot.post(f"{CONTACTS}/batch/update").respond(207, json=batch(
        [obj("1", trace="a")], [{"status": "error", "category": "INTERNAL_ERROR", "message": "partial failure"}]))

    results = write(connect(clock, mocked(hubspot)), "contacts",
                    [{"id": "1", "properties": {"x": "1"}, "key": "a"}, {"id": "2", "properties": {"x": "2"}}])

    assert results[0].ok and not results[1].ok and results[1].error == "INTERNAL_ERROR: partial failure"


def test_a_whole_batch_refused_for_one_bad_input_is_halved_down_to_it(
        hubspot: respx.Router, clock: FakeClock) -> None:
    """HubSpot's batch create answers 400 for the whole batch when one input is invalid, without
    naming it: the connector halves the batch until the bad input is alone."""
    def create(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["inputs"]
        if any(i["properties"]["dealname"] == "BAD" for i in sent):
            return httpx.Response(400, json={
                "status": "error", "category": "VALIDATION_ERROR", "correlationId": "0d7ac0a8-7b5f-4f3e-9a1d",
                "message": 'Property values were not valid: [{"isValid":false,"message":"BAD was not a valid '
                           'number.","error":"INVALID_DOUBLE","name":"amount"}]'})
        return echo(201)(request)
    route = hubspot.post(f"{DEALS}/batch/create").mock(side_effect=create)
    changes = [{"fields": {"name": "BAD" if n == 5 else f"D{n}"}} for n in range(8)]

    results = write(connect(clock, mocked(hubspot)), "deals", changes)

    assert [r.ok for r in results] == [n != 5 for n in range(8)]
    assert "INVALID_DOUBLE" in (results[5].error or "") and "400" in (results[5].error or "")
    # 8 refused; 0-3 pass; 4-7 refused; 4-5 refused; 4 passes, 5 fails alone; 6-7 pass
    assert [len(b) for b in inputs(route)] == [8, 4, 4, 2, 1, 1, 2]


def test_an_html_page_where_json_was_expected_fails_that_batch_only(
        hubspot: respx.Router, clock: FakeClock) -> None:
    html = "<html><head><title>Service Unavailable</title></head><body><h1>Oops</h1></body></html>"
    answers = [httpx.Response(200, text=html, headers={"Content-Type": "text/html; charset=utf-8"}),
               httpx.Response(200, json=batch([obj(str(n), trace=f"k{n}") for n in range(100, 150)]))]
    hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=answers)
    changes = [{"id": str(n), "properties": {"x": "1"}, "key": f"k{n}"} for n in range(150)]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert [r.ok for r in results] == [False] * 100 + [True] * 50
    error = results[0].error or ""
    assert "not JSON" in error and "text/html" in error and "Service Unavailable" in error


def test_a_5xx_on_a_create_is_an_unknown_outcome_never_resent(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{DEALS}/batch/create").respond(
        502, text="<html><body>Bad Gateway</body></html>", headers={"Content-Type": "text/html"})

    results = write(connect(clock, mocked(hubspot)), "deals", [{"fields": {"name": "A"}}, {"fields": {"name": "B"}}])

    assert route.call_count == 1, "a create that may have reached HubSpot is not sent again"
    assert all(not r.ok and "outcome unknown" in (r.error or "") for r in results)


def test_a_5xx_on_an_update_is_retried_then_raised_as_retriable(hubspot: respx.Router, clock: FakeClock) -> None:
    route = hubspot.post(f"{CONTACTS}/batch/update").respond(503, json={"status": "error", "message": "down"})

    with pytest.raises(RetriableError) as caught:
        write(connect(clock, mocked(hubspot)), "contacts", [{"id": "1", "properties": {"x": "1"}}])

    assert route.call_count == 6 and caught.value.status == 503


def test_rejected_credentials_stop_the_write(hubspot: respx.Router, clock: FakeClock) -> None:
    hubspot.post(f"{CONTACTS}/batch/update").respond(401, json={
        "status": "error", "message": "The access token provided is invalid.", "category": "INVALID_AUTHENTICATION"})
    with pytest.raises(AuthError) as caught:
        write(connect(clock, mocked(hubspot)), "contacts", [{"id": "1", "properties": {"x": "1"}}])
    assert TOKEN not in str(caught.value)


def test_the_token_never_appears_in_a_write_result(hubspot: respx.Router, clock: FakeClock) -> None:
    hubspot.post(f"{CONTACTS}/batch/update").respond(400, json={
        "status": "error", "category": "INVALID_INPUT", "message": f"bad header Bearer {TOKEN}"})
    (result,) = write(connect(clock, mocked(hubspot)), "contacts", [{"id": "1", "properties": {"x": "1"}}])
    assert not result.ok and TOKEN not in (result.error or "") and "INVALID_INPUT" in (result.error or "")


# ---- rate limits ---------------------------------------------------------------------------------------
def limited(remaining: int, daily_remaining: int | None = None) -> dict[str, str]:
    headers = {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Remaining": str(remaining),
               "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    if daily_remaining is not None:
        headers |= {"X-HubSpot-RateLimit-Daily": "250000",
                    "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining)}
    return headers


def test_writes_slow_down_when_the_ten_second_window_runs_low(hubspot: respx.Router, clock: FakeClock) -> None:
    """Remaining 10 of 190 in a 10 s window: the next requests are spread over the window (one per
    second) instead of running into a 429."""
    def answer(request: httpx.Request) -> httpx.Response:
        ok = echo()(request)
        return httpx.Response(200, json=json.loads(ok.content), headers=limited(10))
    route = hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=answer)
    changes = [{"id": str(n), "properties": {"x": "1"}} for n in range(400)]

    results = write(connect(clock, mocked(hubspot)), "contacts", changes)

    assert route.call_count == 4 and all(r.ok for r in results)
    assert clock.paced == pytest.approx([1.0, 1.0, 1.0]), "each request after the first waits its slot"
    assert clock.slept == [], "no 429, so no retry sleep"


def test_plenty_left_in_the_window_means_no_waiting(hubspot: respx.Router, clock: FakeClock) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=json.loads(echo()(request).content), headers=limited(150))
    hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=answer)
    write(connect(clock, mocked(hubspot)), "contacts", [{"id": str(n), "properties": {"x": "1"}} for n in range(300)])
    assert clock.paced == []


def test_the_daily_reserve_stops_before_the_next_request(hubspot: respx.Router, clock: FakeClock) -> None:
    """5 % of 250,000 is kept for the account's other apps: with 12,000 left the next request is
    not sent, and the error says when to come back (midnight in the account's zone)."""
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=json.loads(echo()(request).content), headers=limited(150, 12_000))
    route = hubspot.post(f"{CONTACTS}/batch/update").mock(side_effect=answer)
    conn = connect(clock, mocked(hubspot))

    with pytest.raises(RateLimited, match="12000 of 250000 requests left") as caught:
        write(conn, "contacts", [{"id": str(n), "properties": {"x": "1"}} for n in range(200)])

    assert route.call_count == 1
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 86_400


def test_a_daily_429_names_the_reset(hubspot: respx.Router, clock: FakeClock) -> None:
    body = {"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
            "correlationId": "c0ffee00-0000-4000-8000-000000000000", "policyName": "DAILY"}
    hubspot.post(f"{CONTACTS}/batch/update").respond(429, json=body, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited, match="daily request limit is spent") as caught:
        write(connect(clock, mocked(hubspot)), "contacts", [{"id": "1", "properties": {"x": "1"}}])
    assert (caught.value.retry_after or 0) >= 1


def test_the_reset_is_midnight_in_the_accounts_time_zone() -> None:
    noon_utc = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert DailyLimit(0.05, "UTC", clock=lambda: noon_utc).seconds_to_reset() == 12 * 3600
    assert DailyLimit(0.05, "America/New_York", clock=lambda: noon_utc).seconds_to_reset() == 16 * 3600


def test_an_unknown_time_zone_is_a_config_error(clock: FakeClock) -> None:
    from hub.config import ConfigError

    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        connect(clock, timezone="Mars/Olympus")


# ---- against the sandbox ---------------------------------------------------------------------------------
def test_upserts_creates_and_updates_land_in_the_sandbox(clock: FakeClock) -> None:
    store = SandboxStore(contacts=300)
    with SandboxServer(store, token=TOKEN) as server:
        existing = [store.raw("contacts", i)["email"] for i in range(0, 100)]
        changes: list[dict[str, Any]] = [{"fields": {"email": e, "title": "VP Revenue"}, "key": f"old-{n}"}
                                         for n, e in enumerate(existing)]
        changes += [{"fields": {"email": f"new{n}@example.org", "first_name": "Neu"}, "key": f"new-{n}"}
                    for n in range(150)]
        changes += [{"id": "1200", "fields": {"last_name": "Updated"}}, {"id": "999999", "fields": {"title": "x"}}]
        changes += [{"fields": {"email": "not-an-email", "first_name": "Bad"}}]
        store.reset_stats()

        results = write(connect(clock, base_url=server.url), "contacts", changes)

        assert [r.ok for r in results] == [True] * 251 + [False, False]
        assert [r.created for r in results[:250]] == [False] * 100 + [True] * 150
        assert [r.external_id for r in results[:3]] == ["1001", "1002", "1003"]
        assert store.raw("contacts", 0)["jobtitle"] == "VP Revenue"
        assert store.raw("contacts", 199)["lastname"] == "Updated"
        assert "OBJECT_NOT_FOUND" in (results[251].error or "") and "INVALID_EMAIL" in (results[252].error or "")
        assert len(store.ids("contacts")) == 450
        assert store.stats()["requests"] == {"POST contacts.batch.upsert": 3, "POST contacts.batch.update": 1}

        again = write(connect(clock, base_url=server.url), "contacts", changes[100:250])
        assert all(r.ok and not r.created for r in again), "sent twice, created once"
        assert len(store.ids("contacts")) == 450


def test_a_bad_create_in_the_sandbox_is_found_by_halving(clock: FakeClock) -> None:
    store = SandboxStore(contacts=10)
    with SandboxServer(store, token=TOKEN) as server:
        changes = [{"fields": {"name": f"Co {n}", "domain": f"co{n}.example"}} for n in range(100)]
        changes[37] = {"properties": {"name": "Co 37", "no_such_property": "x"}}
        store.reset_stats()

        results = write(connect(clock, base_url=server.url), "companies", changes)

        assert [r.ok for r in results] == [n != 37 for n in range(100)]
        assert "PROPERTY_DOESNT_EXIST" in (results[37].error or "")
        assert len(store.ids("companies")) == 1 + 99
        # halving 100 down to one input takes six levels of two calls each
        assert store.stats()["requests"]["POST companies.batch.create"] == 1 + 2 * 6


def test_base_url_is_the_host_written_to(clock: FakeClock) -> None:
    with respx.mock(base_url="https://api-eu1.hubapi.com", assert_all_called=True) as eu:
        route = eu.post(f"{CONTACTS}/batch/update").mock(side_effect=echo())
        results = write(connect(clock, mocked(eu), base_url="https://api-eu1.hubapi.com"), "contacts",
                        [{"id": "1", "properties": {"x": "1"}}])
    assert results[0].ok and route.call_count == 1 and BASE not in str(route.calls.last.request.url)
