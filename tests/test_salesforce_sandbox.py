"""The Salesforce sandbox speaks Salesforce's documented shapes: checked over loopback HTTP with
plain httpx (no connector code), so the sandbox cannot drift toward the connector's assumptions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.salesforce.sandbox import SandboxServer, SandboxStore
from connectors.salesforce.sandbox_data import case_safe, sf_id

TOKEN = "sandbox-token"
V = "/services/data/v62.0"


@pytest.fixture
def sb() -> Iterator[tuple[SandboxStore, httpx.Client]]:
    store = SandboxStore(accounts=3, contacts=450, leads=2, opportunities=2, tasks=2, events=2)
    with SandboxServer(store, token=TOKEN) as server, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield store, client


def q(client: httpx.Client, soql: str, *, all_rows: bool = False, batch: int | None = None) -> httpx.Response:
    headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
    return client.get(f"{V}/queryAll" if all_rows else f"{V}/query", params={"q": soql}, headers=headers)


def test_ids_are_18_characters_with_the_case_safe_suffix() -> None:
    # the REST guide's example Account 001D000000IRFmaIAH: the suffix encodes the upper-case positions
    assert case_safe("001D000000IRFma") == "001D000000IRFmaIAH"
    assert case_safe("003D000000QV9n2") == "003D000000QV9n2IAD"
    assert sf_id("001", 1)[:15] == "001Dn0000000001" and len(sf_id("001", 1)) == 18
    assert sf_id("001", 1)[15:] == "IAA"


def test_query_batches_follow_next_records_url(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    first = q(client, "SELECT Id, LastName FROM Contact ORDER BY SystemModstamp, Id", batch=100)
    assert first.status_code == 200
    assert first.headers["Sforce-Limit-Info"].startswith("api-usage=")
    body = first.json()
    assert (body["totalSize"], body["done"], len(body["records"])) == (450, False, 200)  # clamped up to 200
    rec = body["records"][0]
    assert list(rec) == ["attributes", "Id", "LastName"]
    assert rec["attributes"] == {"type": "Contact", "url": f"{V}/sobjects/Contact/{rec['Id']}"}
    seen = [r["Id"] for r in body["records"]]
    while not body["done"]:
        assert body["nextRecordsUrl"].startswith(f"{V}/query/")
        body = client.get(body["nextRecordsUrl"]).json()
        seen += [r["Id"] for r in body["records"]]
    assert "nextRecordsUrl" not in body
    assert seen == store.ids("Contact")


def test_where_order_and_limit(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    target = store.ids("Contact")[10]
    store.modify("Contact", ids=[target], values={"LastName": "O'Brien \\ Co"})
    hit = q(client, "SELECT Id FROM Contact WHERE LastName = 'o\\'brien \\\\ co'").json()
    assert [r["Id"] for r in hit["records"]] == [target], "string comparison is case-insensitive"
    newest = q(client, "SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp DESC, Id DESC LIMIT 1").json()
    assert newest["records"][0]["Id"] == target and newest["totalSize"] == 1
    some = q(client, f"SELECT Id FROM Contact WHERE Id IN ('{target}', 'nope') AND (LastName LIKE 'O\\'B%')").json()
    assert [r["Id"] for r in some["records"]] == [target]


def test_errors_are_lists_of_message_and_error_code(sb: tuple[SandboxStore, httpx.Client]) -> None:
    _store, client = sb
    bad = q(client, "SELECT Id FROM Contact WHERE Name = 'a\\qb'")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
    unknown = q(client, "SELECT Id, Nope__x FROM Contact")
    assert unknown.status_code == 400 and unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Nope__x'" in unknown.json()[0]["message"]
    assert q(client, "SELECT Id FROM Widget").json()[0]["errorCode"] == "INVALID_TYPE"
    anon = httpx.get(f"{client.base_url}{V}/query", params={"q": "SELECT Id FROM Contact"})
    assert anon.status_code == 401
    assert anon.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_deletes_are_in_query_all_and_get_deleted_until_purged(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    start = store.clock() - timedelta(minutes=2)
    gone = store.delete("Contact", store.ids("Contact")[:2])
    assert not set(gone) & {r["Id"] for r in q(client, "SELECT Id FROM Contact").json()["records"]}
    deleted_rows = q(client, "SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true", all_rows=True).json()
    assert sorted(r["Id"] for r in deleted_rows["records"]) == sorted(gone)

    params = {"start": start.isoformat(), "end": (store.clock() + timedelta(minutes=1)).isoformat()}
    body = client.get(f"{V}/sobjects/Contact/deleted/", params=params).json()
    assert set(body) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert sorted(d["id"] for d in body["deletedRecords"]) == sorted(gone)
    assert body["deletedRecords"][0]["deletedDate"].endswith(".000+0000")
    assert body["latestDateCovered"].endswith(":00.000+0000")

    store.purge_deletes("Contact")  # the recycle bin emptied: the window before now is gone
    after = client.get(f"{V}/sobjects/Contact/deleted/", params=params).json()
    assert after["deletedRecords"] == []
    assert datetime.strptime(after["earliestDateAvailable"], "%Y-%m-%dT%H:%M:%S.000%z") > start
    old = client.get(f"{V}/sobjects/Contact/deleted/",
                     params={"start": (store.clock() - timedelta(days=31)).isoformat(), "end": params["end"]})
    assert old.status_code == 400 and old.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_an_expired_locator_is_invalid_query_locator(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    body = q(client, "SELECT Id FROM Contact", batch=200).json()
    store.expire_locators()
    dead = client.get(body["nextRecordsUrl"])
    assert dead.status_code == 400 and dead.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_collection_upserts_answer_per_record(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    url = f"{V}/composite/sobjects/Contact/Ext__c"

    def records(*rows: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"attributes": {"type": "Contact"}, **r} for r in rows]

    body = {"allOrNone": False, "records": records({"Ext__c": "a", "LastName": "A"}, {"Ext__c": "b"},
                                                   {"Ext__c": "c", "LastName": "C", "Email": "bad"})}
    out = client.patch(url, json=body).json()
    assert out[0]["success"] and out[0]["created"] and out[0]["errors"] == []
    assert out[1] == {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"],
                                                    "message": "Required fields are missing: [LastName]"}]}
    assert out[2]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    again = client.patch(url, json={"allOrNone": False, "records": records({"Ext__c": "a", "Title": "CTO"})}).json()
    assert again == [{"id": out[0]["id"], "success": True, "errors": [], "created": False}]
    assert (store.get("Contact", out[0]["id"]) or {})["Title"] == "CTO"

    rolled = client.patch(url, json={"allOrNone": True, "records": records({"Ext__c": "d", "LastName": "D"},
                                                                           {"Ext__c": "e"})}).json()
    assert [r["success"] for r in rolled] == [False, False]
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    too_many = client.patch(url, json={"records": records(*({"Ext__c": str(i), "LastName": "x"} for i in range(201)))})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_the_daily_limit_is_counted_and_enforced() -> None:
    store = SandboxStore(accounts=1, contacts=1, leads=0, opportunities=0, tasks=0, events=0,
                         daily_limit=5, api_used=3)
    with SandboxServer(store, token=None) as server, httpx.Client(base_url=server.url) as client:
        assert client.get(f"{V}/limits").json() == {"DailyApiRequests": {"Max": 5, "Remaining": 1}}
        last = q(client, "SELECT Id FROM Account")
        assert last.headers["Sforce-Limit-Info"] == "api-usage=5/5"
        over = q(client, "SELECT Id FROM Account")
        assert over.status_code == 403
        assert over.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_injected_failures_and_the_vendors_clock(sb: tuple[SandboxStore, httpx.Client]) -> None:
    store, client = sb
    store.fail_next(1, status=503, html=True)
    page = q(client, "SELECT Id FROM Account")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    store.fail_next(1, status=429, retry_after=0)
    limited = q(client, "SELECT Id FROM Account")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "0"
    ok = q(client, "SELECT Id FROM Account")
    assert ok.status_code == 200
    dates = ok.headers.get_list("date")
    assert len(dates) == 1, "one Date header, the org's"
    served = datetime.strptime(dates[0], "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    assert abs((served - store.clock()).total_seconds()) <= 1


def test_runs_as_a_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connectors.salesforce.sandbox", "--contacts", "5", "--token", ""],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        body = httpx.get(f"{url}{V}/query", params={"q": "SELECT Id FROM Contact"}).json()
        assert body["totalSize"] == 5
        stats = httpx.get(f"{url}/_sandbox/stats").json()
        assert stats["requests"] == {"query": 1}
    finally:
        proc.terminate()
        proc.wait(10)
