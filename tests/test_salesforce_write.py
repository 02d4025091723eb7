"""The write side: upserts by external ID through sObject collections, per-record results.

respx for the request shapes and the mixed-result bodies of the REST guide; the sandbox on
loopback for the end-to-end behaviour (mixed results, idempotent repeats, 200 a call).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
from connectors.salesforce.sandbox import SandboxServer, SandboxStore
from hub.sdk import ConnectorContext, FatalError, RateLimited

BASE = "https://acme.my.salesforce.com"
UPSERT = "/services/data/v62.0/composite/sobjects/Contact/crmhub_id__c"
TOKEN = "00DDn0000000001!AQ4AQwrite.side.token"


def connector(transport: httpx.BaseTransport | None, url: str = BASE, **config: Any) -> SalesforceConnector:
    cfg = SalesforceConfig.model_validate({
        "kind": "salesforce", "auth": {"access_token": TOKEN, "instance_url": url},
        "external_id_fields": {"Contact": "crmhub_id__c", "Account": "crmhub_id__c"}, **config})
    return SalesforceConnector(cfg, ConnectorContext(name="sf", transport=transport, sleep=lambda _s: None))


@pytest.fixture
def sf() -> Iterator[respx.Router]:
    router = respx.Router(base_url=BASE, assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


def test_mixed_results_come_back_per_record_in_input_order(sf: respx.Router) -> None:
    route = sf.patch(UPSERT).respond(json=[
        {"id": "003Dn0000000001AAA", "success": True, "errors": [], "created": True},
        {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                       "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]},
        {"id": "003Dn0000000003AAA", "success": True, "errors": [], "created": False},
    ])
    changes = [{"crmhub_id__c": "c-1", "LastName": "Lee"}, {"crmhub_id__c": "c-2", "FirstName": "No"},
               {"crmhub_id__c": "c-3", "LastName": "Kim", "_key": "change-77"}]
    results = connector(httpx.MockTransport(sf.handler)).write("Contact", changes)
    body = json.loads(route.calls[0].request.content)
    assert body == {"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "crmhub_id__c": "c-1", "LastName": "Lee"},
        {"attributes": {"type": "Contact"}, "crmhub_id__c": "c-2", "FirstName": "No"},
        {"attributes": {"type": "Contact"}, "crmhub_id__c": "c-3", "LastName": "Kim"}]}
    assert [(r.ok, r.created, r.external_id, r.key) for r in results] == [
        (True, True, "003Dn0000000001AAA", "c-1"), (False, False, None, "c-2"),
        (True, False, "003Dn0000000003AAA", "change-77")]
    assert results[1].error == "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (LastName)"


def test_450_changes_are_three_calls_of_at_most_200(sf: respx.Router) -> None:
    sizes: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        records = json.loads(request.content)["records"]
        sizes.append(len(records))
        return httpx.Response(200, json=[{"id": f"003{r['crmhub_id__c']}", "success": True, "errors": [],
                                          "created": True} for r in records])

    sf.patch(UPSERT).mock(side_effect=answer)
    results = connector(httpx.MockTransport(sf.handler)).write(
        "Contact", [{"crmhub_id__c": f"c-{i}", "LastName": "Lee"} for i in range(450)])
    assert sizes == [200, 200, 50]
    assert [r.key for r in results] == [f"c-{i}" for i in range(450)] and all(r.ok for r in results)


def test_bad_changes_fail_alone_without_being_sent(sf: respx.Router) -> None:
    route = sf.patch(UPSERT).respond(json=[{"id": "003Dn0000000001AAA", "success": True, "errors": [], "created": True}])
    changes: list[Any] = [{"LastName": "no external id"}, {"crmhub_id__c": "c-1", "LastName": "ok"},
                          {"crmhub_id__c": "c-2", "Bad Field'": 1}, {"crmhub_id__c": "c-3", "LastName": object()},
                          "not a dict"]
    results = connector(httpx.MockTransport(sf.handler)).write("Contact", changes)
    assert [r.ok for r in results] == [False, True, False, False, False]
    assert "crmhub_id__c" in (results[0].error or "")
    assert "not a Salesforce field name" in (results[2].error or "")
    assert "JSON" in (results[3].error or "")
    assert len(json.loads(route.calls[0].request.content)["records"]) == 1


def test_two_changes_to_one_record_are_merged_into_one(sf: respx.Router) -> None:
    route = sf.patch(UPSERT).respond(json=[{"id": "003Dn0000000001AAA", "success": True, "errors": [], "created": True}])
    results = connector(httpx.MockTransport(sf.handler)).write(
        "Contact", [{"crmhub_id__c": "c-1", "LastName": "Lee"}, {"crmhub_id__c": "c-1", "Title": "CTO"}])
    assert json.loads(route.calls[0].request.content)["records"] == [
        {"attributes": {"type": "Contact"}, "crmhub_id__c": "c-1", "LastName": "Lee", "Title": "CTO"}]
    assert [(r.ok, r.created) for r in results] == [(True, True), (True, False)]


def test_a_failed_call_fails_its_records_and_an_html_answer_is_named(sf: respx.Router) -> None:
    sf.patch(UPSERT).mock(side_effect=[
        httpx.Response(400, json=[{"message": "Field crmhub_id__c is not an External ID", "errorCode": "INVALID_FIELD"}]),
        httpx.Response(200, text="<html><body>Login</body></html>", headers={"Content-Type": "text/html"}),
    ])
    conn = connector(httpx.MockTransport(sf.handler), write_batch_size=1)
    results = conn.write("Contact", [{"crmhub_id__c": "c-1", "LastName": "A"}, {"crmhub_id__c": "c-2", "LastName": "B"}])
    assert not results[0].ok and "INVALID_FIELD" in (results[0].error or "")
    assert not results[1].ok and "not JSON" in (results[1].error or "") and "text/html" in (results[1].error or "")


def test_a_spent_daily_limit_raises_for_the_whole_call(sf: respx.Router) -> None:
    sf.patch(UPSERT).respond(403, json=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    with pytest.raises(RateLimited):
        connector(httpx.MockTransport(sf.handler)).write("Contact", [{"crmhub_id__c": "c-1", "LastName": "A"}])


def test_upserts_are_retried_on_5xx_because_they_are_idempotent(sf: respx.Router) -> None:
    route = sf.patch(UPSERT).mock(side_effect=[
        httpx.Response(503, json=[{"message": "busy", "errorCode": "SERVER_UNAVAILABLE"}]),
        httpx.Response(200, json=[{"id": "003Dn0000000001AAA", "success": True, "errors": [], "created": True}])])
    results = connector(httpx.MockTransport(sf.handler)).write("Contact", [{"crmhub_id__c": "c-1", "LastName": "A"}])
    assert route.call_count == 2 and results[0].ok


def test_a_stream_without_external_id_field_is_a_config_error() -> None:
    conn = connector(None)
    with pytest.raises(FatalError, match="external_id_fields"):
        conn.write("Lead", [{"LastName": "x"}])
    with pytest.raises(FatalError, match="append-only"):
        conn.write("Task", [{"Subject": "x"}])


# ---- against the sandbox on loopback ------------------------------------------------------------

def test_against_the_sandbox_mixed_results_and_a_repeat_creates_nothing() -> None:
    store = SandboxStore(accounts=1, contacts=1, leads=0, opportunities=0, tasks=0, events=0)
    with SandboxServer(store, token=TOKEN) as server:
        conn = connector(None, server.url)
        changes = [{"crmhub_id__c": f"c-{i}", "LastName": f"Lee {i}", "Email": f"c{i}@example.com"} for i in range(250)]
        changes[3] = {"crmhub_id__c": "c-3", "FirstName": "no last name"}
        changes[7] = {"crmhub_id__c": "c-7", "LastName": "Bad", "Email": "not an email"}
        first = conn.write("Contact", changes)
        assert [i for i, r in enumerate(first) if not r.ok] == [3, 7]
        assert "REQUIRED_FIELD_MISSING" in (first[3].error or "") and "INVALID_EMAIL_ADDRESS" in (first[7].error or "")
        assert sum(r.created for r in first) == 248
        assert store.stats == {"composite": 2}
        again = conn.write("Contact", [{**c, "Title": "CTO"} for i, c in enumerate(changes) if i not in (3, 7)])
        assert all(r.ok and not r.created for r in again)
        assert [r.external_id for r in again] == [r.external_id for i, r in enumerate(first) if i not in (3, 7)]
        assert len(store.ids("Contact")) == 1 + 248
        conn.close()
