"""The Salesforce connector's HTTP behaviour against a strict respx fake of Salesforce's REST API.

Bodies follow the REST API Developer Guide's shapes (query: totalSize/done/nextRecordsUrl/records
with attributes; getDeleted: deletedRecords/earliestDateAvailable/latestDateCovered; errors:
[{"message", "errorCode"}]; collections: [{"id", "success", "errors", "created"}]).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from connectors.salesforce.api import parse_limit_info
from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
from connectors.salesforce.sandbox_soql import parse_query
from hub.sdk import (
    AuthError,
    ConnectorContext,
    Cursor,
    CursorExpired,
    FatalError,
    Page,
    RateLimited,
    RetriableError,
    TokenBucket,
)

BASE = "https://acme.my.salesforce.com"
V = "/services/data/v62.0"
QUERY, QUERY_ALL = f"{V}/query", f"{V}/queryAll"
TOKEN = "00DDn0000000001!AQ4AQsecret.token.value"
NOW = datetime(2026, 1, 10, 12, 0, 30, tzinfo=UTC)
LIMIT = {"Sforce-Limit-Info": "api-usage=25/100000"}


def stamp(seconds: int) -> str:
    return (datetime(2026, 1, 5, 9, 0, tzinfo=UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def contact(n: int, at: int, **extra: Any) -> dict[str, Any]:
    rid = f"003Dn{n:010d}AAA"
    return {"attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{rid}"}, "Id": rid,
            "LastName": f"Lee {n}", "Email": f"c{n}@example.com", "SystemModstamp": stamp(at), **extra}


def batch(records: list[dict[str, Any]], next_url: str | None = None, total: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"totalSize": total if total is not None else len(records), "done": next_url is None,
                           "records": records}
    if next_url:
        out["nextRecordsUrl"] = next_url
    return out


@pytest.fixture
def sf() -> Iterator[respx.Router]:
    """A strict fake Salesforce: a request no route matches fails, and every route must be called."""
    router = respx.Router(base_url=BASE, assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


def connector(router: respx.Router, *, budget: Any = None, sleeps: list[float] | None = None,
              **config: Any) -> SalesforceConnector:
    cfg = SalesforceConfig.model_validate({"kind": "salesforce",
                                           "auth": {"access_token": TOKEN, "instance_url": BASE}, **config})
    sink = sleeps if sleeps is not None else []
    ctx = ConnectorContext(name="sf", budget=budget, transport=httpx.MockTransport(router.handler),
                           sleep=sink.append)
    return SalesforceConnector(cfg, ctx, clock=lambda: NOW)


def read(conn: SalesforceConnector, stream: str = "Contact", cursor: Cursor | None = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def soql_of(request: httpx.Request) -> str:
    return request.url.params["q"]


# ---- paging and the keyset ---------------------------------------------------------------------------

def test_a_first_load_follows_next_records_url_and_checkpoints_each_batch(sf: respx.Router) -> None:
    first = [contact(i, i // 3) for i in range(4)]
    second = [contact(i, i // 3) for i in range(4, 7)]
    q = sf.get(QUERY).respond(json=batch(first, f"{V}/query/01gDn00000001-4", 7),
                              headers={**LIMIT, "Date": "Sat, 10 Jan 2026 12:00:07 GMT"})
    more = sf.get(f"{V}/query/01gDn00000001-4").respond(json=batch(second, total=7), headers=LIMIT)
    pages = read(connector(sf))
    assert [[r.external_id for r in p.records] for p in pages] == [[r["Id"] for r in first], [r["Id"] for r in second]]
    parsed = parse_query(soql_of(q.calls[0].request))
    assert parsed.where is None and parsed.order_by == [("SystemModstamp", False, False), ("Id", False, False)]
    assert {"Id", "SystemModstamp", "LastName", "Email", "AccountId"} <= set(parsed.fields)
    assert q.calls[0].request.headers["Sforce-Query-Options"] == "batchSize=2000"
    assert more.calls[0].request.headers["authorization"] == f"Bearer {TOKEN}"
    # each page's cursor is the keyset of its last record; deletes start at the vendor's clock of the query
    assert pages[0].next_cursor == {"ts": stamp(1), "id": first[-1]["Id"], "deleted_since": "2026-01-10T12:00:07+00:00"}
    assert pages[1].next_cursor == {"ts": stamp(2), "id": second[-1]["Id"], "deleted_since": "2026-01-10T12:00:07+00:00"}
    assert [p.requests for p in pages] == [1, 1]
    assert pages[0].records[0].updated_at == "2026-01-05T09:00:00+00:00"


def test_the_keyset_resumes_inside_a_second_shared_by_many_records(sf: respx.Router) -> None:
    """Thousands of records in one second: the tie-breaker resumes after the last Id read."""
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": None}
    later = [contact(501, 5), contact(502, 6)]
    q = sf.get(QUERY).respond(json=batch(later), headers=LIMIT)
    pages = read(connector(sf), cursor=cursor)
    where = parse_query(soql_of(q.calls[0].request)).where
    assert where is not None
    assert where({"SystemModstamp": stamp(5), "Id": "003Dn0000000501AAA"})
    assert not where({"SystemModstamp": stamp(5), "Id": "003Dn0000000500AAA"})
    assert not where({"SystemModstamp": stamp(5), "Id": "003Dn0000000499AAA"})
    assert where({"SystemModstamp": stamp(6), "Id": "003Dn0000000001AAA"})
    assert [r.external_id for r in pages[0].records] == [r["Id"] for r in later]
    assert pages[-1].next_cursor is not None
    assert (pages[-1].next_cursor["ts"], pages[-1].next_cursor["id"]) == (stamp(6), later[-1]["Id"])


def test_sub_second_stamps_already_read_are_dropped(sf: respx.Router) -> None:
    """If an org keeps milliseconds, the query (to the second) returns that second again."""
    t = "2026-01-05T09:00:05.500+0000"
    cursor = {"ts": t, "id": "003Dn0000000500AAA", "deleted_since": None}
    rows = [contact(400, 5, SystemModstamp="2026-01-05T09:00:05.200+0000"),
            contact(499, 5, SystemModstamp=t), contact(500, 5, SystemModstamp=t),
            contact(501, 5, SystemModstamp=t), contact(10, 5, SystemModstamp="2026-01-05T09:00:05.900+0000")]
    sf.get(QUERY).respond(json=batch(rows), headers=LIMIT)
    pages = read(connector(sf), cursor=cursor)
    assert [r.external_id for r in pages[0].records] == ["003Dn0000000501AAA", "003Dn0000000010AAA"]


def test_an_empty_incremental_read_still_leaves_a_cursor(sf: respx.Router) -> None:
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": None}
    sf.get(QUERY).respond(json=batch([]), headers=LIMIT)
    pages = read(connector(sf), cursor=cursor)
    assert len(pages) == 1 and pages[0].records == []
    # a cursor without a delete window gets one from now on (without a Date header: our clock, a minute early)
    assert pages[0].next_cursor == {**cursor, "deleted_since": "2026-01-10T11:59:30+00:00"}


def test_a_dead_query_locator_mid_read_requeries_from_the_keyset(sf: respx.Router) -> None:
    first = [contact(i, i) for i in range(3)]
    rest = [contact(i, i) for i in range(3, 5)]
    q = sf.get(QUERY).mock(side_effect=[httpx.Response(200, json=batch(first, f"{V}/query/01gX-3", 5)),
                                        httpx.Response(200, json=batch(rest))])
    sf.get(f"{V}/query/01gX-3").respond(400, json=[{"message": "invalid query locator",
                                                    "errorCode": "INVALID_QUERY_LOCATOR"}])
    pages = read(connector(sf))
    assert [r.external_id for p in pages for r in p.records] == [r["Id"] for r in first + rest]
    requery = parse_query(soql_of(q.calls[1].request)).where
    assert requery is not None and not requery(first[-1]) and requery(rest[0])
    assert sum(p.requests for p in pages) == 3  # the failed locator call is counted


def test_a_record_without_id_or_stamp_is_rejected_and_the_page_goes_on(sf: respx.Router) -> None:
    rows = [contact(1, 1), {"attributes": {"type": "Contact"}, "LastName": "no id"},
            contact(2, 2, SystemModstamp="yesterday"), contact(3, 3)]
    sf.get(QUERY).respond(json=batch(rows), headers=LIMIT)
    page = read(connector(sf))[0]
    assert [r.external_id for r in page.records] == [rows[0]["Id"], rows[3]["Id"]]
    assert len(page.rejected) == 2 and "SystemModstamp" in page.rejected[1].reason
    assert page.next_cursor is not None and page.next_cursor["id"] == rows[3]["Id"]


def test_a_task_that_cannot_be_an_activity_is_rejected_alone(sf: respx.Router) -> None:
    good = {"attributes": {"type": "Task"}, "Id": "00TDn0000000001AAA", "Subject": "Call",
            "CreatedDate": stamp(0), "SystemModstamp": stamp(1), "WhoId": "003Dn0000000002AAA"}
    undated = {"attributes": {"type": "Task"}, "Id": "00TDn0000000002AAA", "SystemModstamp": stamp(2)}
    sf.get(QUERY).respond(json=batch([good, undated]), headers=LIMIT)
    page = read(connector(sf), stream="Task")[0]
    assert [r.external_id for r in page.records] == [good["Id"]]
    assert page.records[0].activity is not None and page.records[0].activity.refs == {"contact": "003Dn0000000002AAA"}
    assert [r.external_id for r in page.rejected] == [undated["Id"]] and "Task without" in page.rejected[0].reason
    assert page.next_cursor is not None and page.next_cursor["id"] == undated["Id"], "a rejected record is passed"


# ---- deletes ---------------------------------------------------------------------------------------

def test_deletes_come_from_get_deleted_before_the_changes(sf: respx.Router) -> None:
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": "2026-01-10T10:00:00+00:00"}
    order: list[str] = []

    def deleted(request: httpx.Request) -> httpx.Response:
        order.append("deleted")
        return httpx.Response(200, headers=LIMIT, json={
            "deletedRecords": [{"id": "003Dn0000000007AAA", "deletedDate": "2026-01-10T11:30:19.000+0000"}],
            "earliestDateAvailable": "2025-12-26T15:57:00.000+0000",
            "latestDateCovered": "2026-01-10T12:00:00.000+0000"})

    def query(request: httpx.Request) -> httpx.Response:
        order.append("query")
        return httpx.Response(200, headers=LIMIT, json=batch([contact(501, 9)]))

    d = sf.get(f"{V}/sobjects/Contact/deleted/").mock(side_effect=deleted)
    sf.get(QUERY).mock(side_effect=query)
    pages = read(connector(sf), cursor=cursor)
    assert order == ["deleted", "query"], "a record deleted then restored must end live"
    assert dict(d.calls[0].request.url.params) == {"start": "2026-01-10T10:00:00+00:00", "end": "2026-01-10T12:00:30+00:00"}
    assert pages[0].deleted == ["003Dn0000000007AAA"] and pages[0].records == []
    assert pages[0].next_cursor == {**cursor, "deleted_since": "2026-01-10T12:00:00+00:00"}
    assert pages[1].next_cursor is not None and pages[1].next_cursor["deleted_since"] == "2026-01-10T12:00:00+00:00"


def test_an_empty_delete_window_is_counted_with_the_next_page_and_never_moves_back(sf: respx.Router) -> None:
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": "2026-01-10T12:00:00+00:00"}
    sf.get(f"{V}/sobjects/Contact/deleted/").respond(json={
        "deletedRecords": [], "earliestDateAvailable": "2025-12-26T15:57:00.000+0000",
        "latestDateCovered": "2026-01-10T11:59:00.000+0000"}, headers=LIMIT)
    sf.get(QUERY).respond(json=batch([]), headers=LIMIT)
    pages = read(connector(sf), cursor=cursor)
    assert len(pages) == 1 and pages[0].requests == 2
    assert pages[0].next_cursor == cursor


def test_a_run_in_the_same_second_still_asks_for_deletes(sf: respx.Router) -> None:
    """Right after a load (same second by the vendor's clock), a delete may already be logged."""
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": "2026-01-10T12:00:30+00:00"}
    d = sf.get(f"{V}/sobjects/Contact/deleted/").respond(json={
        "deletedRecords": [{"id": "003Dn0000000007AAA", "deletedDate": "2026-01-10T12:00:30.000+0000"}],
        "earliestDateAvailable": "2025-12-26T15:57:00.000+0000",
        "latestDateCovered": "2026-01-10T12:00:00.000+0000"}, headers=LIMIT)
    sf.get(QUERY).respond(json=batch([]), headers=LIMIT)
    pages = read(connector(sf), cursor=cursor)
    assert dict(d.calls[0].request.url.params) == {"start": "2026-01-10T12:00:30+00:00", "end": "2026-01-10T12:00:31+00:00"}
    assert pages[0].deleted == ["003Dn0000000007AAA"]
    assert pages[-1].next_cursor == cursor, "latestDateCovered before the start never moves it back"


def test_a_delete_window_older_than_earliest_date_available_expires_the_cursor(sf: respx.Router) -> None:
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": "2025-12-20T10:00:00+00:00"}
    sf.get(f"{V}/sobjects/Contact/deleted/").respond(json={
        "deletedRecords": [{"id": "003Dn0000000007AAA", "deletedDate": "2026-01-01T00:00:00.000+0000"}],
        "earliestDateAvailable": "2025-12-26T15:57:00.000+0000",
        "latestDateCovered": "2026-01-10T12:00:00.000+0000"}, headers=LIMIT)
    with pytest.raises(CursorExpired, match="earliestDateAvailable"):
        read(connector(sf), cursor=cursor)


def test_invalid_replication_date_expires_the_cursor(sf: respx.Router) -> None:
    cursor = {"ts": stamp(5), "id": "003Dn0000000500AAA", "deleted_since": "2025-11-01T10:00:00+00:00"}
    sf.get(f"{V}/sobjects/Contact/deleted/").respond(400, json=[
        {"message": "startDate cannot be more than 30 days ago", "errorCode": "INVALID_REPLICATION_DATE"}])
    with pytest.raises(CursorExpired, match="INVALID_REPLICATION_DATE"):
        read(connector(sf), cursor=cursor)


def test_query_all_mode_reports_is_deleted_rows_as_deletes(sf: respx.Router) -> None:
    rows = [contact(1, 1, IsDeleted=False), contact(2, 2, IsDeleted=True), contact(3, 3, IsDeleted=False)]
    q = sf.get(QUERY_ALL).respond(json=batch(rows), headers=LIMIT)
    pages = read(connector(sf, deletes="query_all"), cursor={"ts": stamp(0), "id": "003Dn0000000000AAA"})
    assert [r.external_id for r in pages[0].records] == [rows[0]["Id"], rows[2]["Id"]]
    assert pages[0].deleted == [rows[1]["Id"]]
    assert "IsDeleted" in parse_query(soql_of(q.calls[0].request)).fields


def test_query_all_mode_expires_a_cursor_older_than_the_recycle_bin(sf: respx.Router) -> None:
    old = (NOW - timedelta(days=16)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    with pytest.raises(CursorExpired, match="recycle bin"):
        read(connector(sf, deletes="query_all"), cursor={"ts": old, "id": "003Dn0000000000AAA"})


# ---- errors ----------------------------------------------------------------------------------------

def test_an_html_page_where_json_was_expected_is_a_clear_error(sf: respx.Router) -> None:
    html = f"<html><head><title>Login</title></head><body>session {TOKEN} expired, sign in</body></html>"
    sf.get(QUERY).respond(200, text=html, headers={"Content-Type": "text/html;charset=UTF-8"})
    with pytest.raises(FatalError) as err:
        read(connector(sf))
    text = str(err.value)
    assert "not JSON" in text and "text/html" in text and "<title>Login" in text
    assert TOKEN not in text and "secret.token.value" not in text


def test_an_html_5xx_is_retried_then_a_retriable_error(sf: respx.Router) -> None:
    route = sf.get(QUERY).respond(503, text="<html><body>Maintenance</body></html>",
                                  headers={"Content-Type": "text/html"})
    sleeps: list[float] = []
    with pytest.raises(RetriableError, match="503"):
        read(connector(sf, sleeps=sleeps))
    assert route.call_count == 6 and len(sleeps) == 5


def test_an_expired_session_is_an_auth_error_without_the_token(sf: respx.Router) -> None:
    sf.get(QUERY).respond(401, json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    with pytest.raises(AuthError, match="INVALID_SESSION_ID") as err:
        read(connector(sf))
    assert TOKEN not in str(err.value)


def test_a_malformed_query_names_the_vendors_message(sf: respx.Router) -> None:
    sf.get(QUERY).respond(400, json=[{"message": "No such column 'Foo' on entity 'Contact'",
                                      "errorCode": "INVALID_FIELD"}])
    with pytest.raises(FatalError, match="INVALID_FIELD: No such column 'Foo'"):
        read(connector(sf))


def test_an_unknown_stream_is_named() -> None:
    with pytest.raises(FatalError, match="custom_objects"):
        read(connector(respx.Router(base_url=BASE)), stream="Invoice__c")


# ---- rate limits -----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_limit_info_is_parsed() -> None:
    usage = parse_limit_info("api-usage=10018/100000; api-bursts=1/750")
    assert usage is not None and (usage.used, usage.limit, usage.remaining) == (10018, 100000, 89982)
    assert parse_limit_info("per-app-api-usage=1/2") is None
    both = parse_limit_info("per-app-api-usage=17/250(appName=sample-app); api-usage=18/5000")
    assert both is not None and (both.used, both.limit) == (18, 5000)
    assert parse_limit_info(None) is None


def test_near_the_daily_limit_requests_are_spread_over_the_window(sf: respx.Router) -> None:
    """Below 10% of the daily limit left, the budget paces the rest over the rolling 24 hours
    instead of spending it and meeting REQUEST_LIMIT_EXCEEDED."""
    clock = FakeClock()
    bucket = TokenBucket(None, 10, clock=clock, sleep=clock.sleep)
    nexts = [f"{V}/query/01gX-{i}" for i in range(1, 4)]
    sf.get(QUERY).respond(json=batch([contact(0, 0)], nexts[0]), headers={"Sforce-Limit-Info": "api-usage=90000/100000"})
    for i, url in enumerate(nexts):
        follow = nexts[i + 1] if i + 1 < len(nexts) else None
        sf.get(url).respond(json=batch([contact(i + 1, i + 1)], follow),
                            headers={"Sforce-Limit-Info": f"api-usage={95000 + i}/100000"})
    pages = read(connector(sf, budget=bucket))
    assert len(pages) == 4
    # the first answer (10,000 left = the low-water mark) starts pacing: 86,400 s / 10,000 per call
    assert clock.slept and clock.slept[0] == pytest.approx(86_400 / 10_000)
    assert clock.slept[-1] == pytest.approx(86_400 / 4_999, rel=0.01)


def test_plenty_of_budget_left_never_slows_down(sf: respx.Router) -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, 10, clock=clock, sleep=clock.sleep)
    sf.get(QUERY).respond(json=batch([contact(0, 0)], f"{V}/query/01gX-1"), headers=LIMIT)
    sf.get(f"{V}/query/01gX-1").respond(json=batch([contact(1, 1)]), headers=LIMIT)
    read(connector(sf, budget=bucket))
    assert clock.slept == []


def test_request_limit_exceeded_is_rate_limited_not_an_auth_error(sf: respx.Router) -> None:
    sf.get(QUERY).respond(403, json=[{"message": "TotalRequests Limit exceeded.",
                                      "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                          headers={"Sforce-Limit-Info": "api-usage=100001/100000"})
    with pytest.raises(RateLimited, match="REQUEST_LIMIT_EXCEEDED"):
        read(connector(sf))


def test_a_reserve_of_calls_is_left_to_other_integrations(sf: respx.Router) -> None:
    sf.get(QUERY).respond(json=batch([contact(0, 0)], f"{V}/query/01gX-1"),
                          headers={"Sforce-Limit-Info": "api-usage=99500/100000"})
    with pytest.raises(RateLimited, match="min_api_remaining"):
        read(connector(sf, min_api_remaining=500))


# ---- session -----------------------------------------------------------------------------------------

def test_instance_url_and_api_version_come_from_config(sf: respx.Router) -> None:
    other = "https://other.my.salesforce.com"
    router = respx.Router(base_url=other, assert_all_called=True, assert_all_mocked=True)
    route = router.get("/services/data/v60.0/limits").respond(
        json={"DailyApiRequests": {"Max": 15000, "Remaining": 14998}}, headers=LIMIT)
    cfg = SalesforceConfig.model_validate({"kind": "salesforce", "api_version": "v60.0",
                                           "auth": {"access_token": TOKEN, "instance_url": other + "/"}})
    conn = SalesforceConnector(cfg, ConnectorContext(name="sf", transport=httpx.MockTransport(router.handler)))
    assert conn.check().endswith("14998 of 15000 API requests left today")
    assert route.called
    session = conn.session()
    assert (session.instance_url, session.data_path) == (other, "/services/data/v60.0")
    conn.close()
