"""The HubSpot connector's HTTP behaviour, against a strict respx fake of HubSpot.

Requests and responses are built by the small builders below, in the shapes of HubSpot's
CRM v3 objects reference: a list page is ``{"results": [...], "paging": {"next": {"after",
"link"}}}`` with no ``paging`` on the last page; a search page adds ``total``; a record is
``{"id", "properties", "createdAt", "updatedAt", "archived"}`` (plus ``archivedAt``).
The month-end trap and the 10,000-result cap also run for real against the HubSpot
sandbox on loopback.

Nothing really sleeps: the retry layer sleeps on a fake clock, and each connector's
request budget is put on the same clock (see `connect`).
"""

from __future__ import annotations

import json
import math
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from connectors.hubspot.connector import HubSpotConnector
from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import AuthError, Cursor, FatalError, Page, RateLimited, RetriableError, RetryPolicy, TokenBucket
from hub.sdk.connector import Connector

BASE = "https://api.hubapi.com"
TOKEN = "pat-na1-3f0c9b2e-8d7a-4e61-b5c4-2a1f0e9d8c7b"
T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z, the filter value in HubSpot's search example
DAY = 86_400_000
CONTACTS = "/crm/v3/objects/contacts"
POLICY = RetryPolicy()  # the connector uses the SDK's default retry policy


# ---- builders: HubSpot's documented shapes ------------------------------------------------------
def iso(ms: int) -> str:
    """Epoch ms as HubSpot writes dates: ``2019-10-30T03:30:17.883Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def record(rid: int, modified: int, ts_prop: str = "lastmodifieddate", **props: str) -> dict[str, Any]:
    """A SimplePublicObject as list and search return it (date properties as ISO strings)."""
    return {"id": str(rid), "properties": {"hs_object_id": str(rid), ts_prop: iso(modified), **props},
            "createdAt": iso(modified - DAY), "updatedAt": iso(modified), "archived": False}


def archived(rid: int, at: int) -> dict[str, Any]:
    return {**record(rid, at), "archived": True, "archivedAt": iso(at)}


def list_page(results: list[dict[str, Any]], after: str | None = None, path: str = CONTACTS) -> dict[str, Any]:
    page: dict[str, Any] = {"results": results}
    if after:
        page["paging"] = {"next": {"after": after, "link": f"{BASE}{path}?after={after}"}}
    return page


def search_page(results: list[dict[str, Any]], total: int | None = None, after: str | None = None) -> dict[str, Any]:
    page = {"total": len(results) if total is None else total, **list_page(results, after)}
    if after:
        page["paging"]["next"]["link"] = f"?after={after}"
    return page


def error(status: int, message: str, category: str, **headers: str) -> httpx.Response:
    body = {"status": "error", "message": message, "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
            "category": category}
    return httpx.Response(status, json=body, headers=headers)


def rate_limited(retry_after: str) -> httpx.Response:
    body = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": "4f2b1c1e-1d5a-4b8e-9a51-6a0c2b7f9d10",
            "policyName": "TEN_SECONDLY_ROLLING"}
    return httpx.Response(429, json=body, headers={"Retry-After": retry_after})


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def incremental(ts: int, seen: list[str] | None = None, **more: Any) -> Cursor:
    """An incremental cursor, as the connector's module docstring describes it."""
    return {"phase": "incremental", "ts": ts, "seen": seen or [], "all_at_ts": False, "id_after": None,
            "collapsed": False, "archived_since": 0, "archived_after": None, "archived_max": None, **more}


# ---- reading what was sent ----------------------------------------------------------------------
def sent(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


def filters(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["propertyName"], f["operator"], f["value"]) for g in body.get("filterGroups", []) for f in g["filters"]]


def sort(body: dict[str, Any]) -> tuple[str, str]:
    first = body["sorts"][0]
    return first["propertyName"], first["direction"]


def stamp(rec: dict[str, Any], prop: str) -> int:
    return int(datetime.fromisoformat(rec["properties"][prop].replace("Z", "+00:00")).timestamp() * 1000)


def ids(pages: list[Page]) -> list[str]:
    return [r.external_id for p in pages for r in p.records]


class FakeSearch:
    """HubSpot's search endpoint over `records`, as documented: AND-ed filters in one group, the
    first sort only, ``limit`` at most 200, ``after`` an offset, and 400 once ``after + limit``
    passes 10,000. HubSpot documents no order among equal sort keys, so ties come back scrambled
    here (not in id order), and an unexpected filter fails the test."""

    def __init__(self, records: list[dict[str, Any]], ts_prop: str = "lastmodifieddate") -> None:
        self.ts_prop = ts_prop
        self.records = sorted(records, key=lambda r: (stamp(r, ts_prop), zlib.crc32(r["id"].encode())))
        self.stamps = [stamp(r, ts_prop) for r in self.records]
        self.bodies: list[dict[str, Any]] = []
        self.rejected = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(sent(request))
        assert len(self.bodies) <= 1_000, "the connector keeps searching: a keyset that does not move?"
        return self.answer(self.bodies[-1])

    def answer(self, body: dict[str, Any]) -> httpx.Response:
        limit, after = int(body.get("limit", 10)), int(body.get("after") or 0)
        if limit > 200 or after + limit > 10_000:
            self.rejected += 1
            return error(400, "Search results are limited to 10,000; narrow the filters.", "VALIDATION_ERROR")
        lo, hi, id_gt = 0, len(self.records), None
        for prop, op, value in filters(body):
            if (prop, op) == ("hs_object_id", "GT"):
                id_gt = int(value)
                continue
            assert prop == self.ts_prop and op in ("GTE", "GT", "EQ", "LTE"), f"unexpected filter {prop} {op}"
            if op in ("GTE", "EQ"):
                lo = max(lo, bisect_left(self.stamps, int(value)))
            if op == "GT":
                lo = max(lo, bisect_right(self.stamps, int(value)))
            if op in ("EQ", "LTE"):
                hi = min(hi, bisect_right(self.stamps, int(value)))
        hits = self.records[lo:hi]
        if id_gt is not None:
            hits = [r for r in hits if int(r["id"]) > id_gt]
        prop, direction = sort(body)
        if prop == "hs_object_id":
            hits = sorted(hits, key=lambda r: int(r["id"]))
        else:
            assert prop == self.ts_prop, f"unexpected sort on {prop}"
        if direction == "DESCENDING":
            hits = hits[::-1]
        more = after + limit < len(hits)
        return ok(search_page(hits[after:after + limit], total=len(hits), after=str(after + limit) if more else None))


# ---- the connector under test -------------------------------------------------------------------
class FakeClock:
    """Time for the retry layer and the request budget: sleeping moves it on; nothing really waits."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []  # what the HTTP retry layer slept
        self.paced: list[float] = []  # what the request budget waited

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def pace(self, seconds: float) -> None:
        self.paced.append(seconds)
        self.now += seconds


def connect(clock: FakeClock, transport: httpx.BaseTransport | None = None, *, base_url: str = BASE,
            **options: Any) -> Connector:
    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "base_url": base_url, "auth": {"token": TOKEN},
                                              "search_lag_ms": 0, **options}}})
    conn = ConnectorFactory(cfg, transport=transport, sleep=clock.sleep).build("hs")
    # The factory's budget runs on the wall clock and would really sleep through a 429's shared
    # pause (and past 19 requests a second): give this connector the same budget on the test clock.
    conn.context.budget = TokenBucket(HubSpotConnector.default_rate, HubSpotConnector.default_burst,
                                      clock=clock.time, sleep=clock.pace)
    return conn


def read(conn: Connector, stream: str = "contacts", cursor: Cursor | None = None) -> list[Page]:
    pages: list[Page] = []
    try:
        for page in conn.read(stream, cursor):
            pages.append(page)
            assert len(pages) <= 1_000, "the read does not end"
        return pages
    finally:
        conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hubspot() -> Iterator[respx.Router]:
    """A strict fake HubSpot: a request no route matches fails, and every route must be called."""
    router = respx.Router(base_url=BASE, assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


def mocked(router: respx.Router) -> httpx.MockTransport:
    return httpx.MockTransport(router.handler)


def mount_empty_archive(router: respx.Router, path: str = CONTACTS) -> respx.Route:
    return router.get(path, params={"archived": "true"}).respond(json=list_page([]))


# ---- 1. full load -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 100, 250])
def test_full_load_pages_the_list_then_probes_searches_and_lists_archived(
        hubspot: respx.Router, clock: FakeClock, n: int) -> None:
    records = [record(1001 + i, T0 + i * 1000) for i in range(n)]
    chunks = [records[i:i + 100] for i in range(0, n, 100)] or [[]]
    tokens = [f"NTI1Cg{k}" for k in range(1, len(chunks))]  # the `after` that fetches chunk k+1
    live = hubspot.get(CONTACTS, params={"archived": "false"}).mock(side_effect=[
        ok(list_page(chunk, tokens[k] if k < len(tokens) else None)) for k, chunk in enumerate(chunks)])
    newest = records[-1:]
    search = hubspot.post(f"{CONTACTS}/search").mock(side_effect=[
        ok(search_page(newest, total=n, after="1" if n > 1 else None)),  # the probe
        ok(search_page(newest))])  # the first incremental search: only the probed record
    gone = mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot), properties={"contacts": ["hs_lead_status"]}))

    assert ids(pages) == [r["id"] for r in records], "every record once, in list order"
    expected = max(1, math.ceil(n / 100)) + 3  # list pages + probe + incremental search + archived list
    assert len(hubspot.calls) == expected == sum(p.requests for p in pages)
    assert [(c.request.method, c.request.url.params.get("archived")) for c in hubspot.calls] == [
        ("POST", None), *[("GET", "false")] * len(chunks), ("POST", None), ("GET", "true")]
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in hubspot.calls)

    assert [c.request.url.params.get("after") for c in live.calls] == [None, *tokens]
    for call in live.calls:
        params = call.request.url.params
        assert (params["limit"], params["archived"]) == ("100", "false")
        assert {"email", "firstname", "lastname", "lastmodifieddate", "hs_lead_status"} <= set(
            params["properties"].split(","))

    probe, first = (sent(c.request) for c in search.calls)
    assert sort(probe) == ("lastmodifieddate", "DESCENDING") and probe["limit"] == 1 and not filters(probe)
    since = T0 + (n - 1) * 1000 if n else 0
    assert filters(first) == [("lastmodifieddate", "GTE", str(since))]
    assert sort(first) == ("lastmodifieddate", "ASCENDING") and first["limit"] == 200 and "after" not in first
    assert gone.calls.last.request.url.params["archived"] == "true"

    final = pages[-1].next_cursor
    assert final is not None
    assert (final["phase"], final["ts"], final["seen"]) == ("incremental", since, [r["id"] for r in newest])


# ---- 2. incremental -----------------------------------------------------------------------------
@pytest.mark.parametrize(("stream", "ts_prop"), [("contacts", "lastmodifieddate"),
                                                 ("companies", "hs_lastmodifieddate"),
                                                 ("deals", "hs_lastmodifieddate")])
def test_incremental_keysets_by_the_modified_time_and_skips_what_it_saw(
        hubspot: respx.Router, clock: FakeClock, stream: str, ts_prop: str) -> None:
    # Contacts carry hs_lastmodifieddate too; here it is a decoy a day off, so reading it would show.
    decoy = {"hs_lastmodifieddate": iso(T0 - DAY)} if stream == "contacts" else {}

    def rec(rid: int, ms: int) -> dict[str, Any]:
        return record(rid, ms, ts_prop, **decoy)

    already_read = rec(1, T0)  # in the cursor's `seen`
    same_ts_unread = rec(2, T0)  # shares the cursor's time, not read yet
    rising = [rec(100 + i, T0 + 1 + i) for i in range(196)]
    boundary = [rec(500 + i, T0 + 198) for i in range(3)]  # the first page ends inside these three
    later = [rec(900 + i, T0 + 300 + i) for i in range(40)]
    everything = [already_read, same_ts_unread, *rising, *boundary, *later]
    fake = FakeSearch(everything, ts_prop)
    path = f"/crm/v3/objects/{stream}"
    hubspot.post(f"{path}/search").mock(side_effect=fake)
    mount_empty_archive(hubspot, path)

    pages = read(connect(clock, mocked(hubspot)), stream, incremental(T0, seen=["1"]))

    got = ids(pages)
    assert sorted(got) == sorted(r["id"] for r in everything[1:]) and len(got) == len(set(got))
    first, second = fake.bodies
    assert filters(first) == [(ts_prop, "GTE", str(T0))]  # epoch-ms string
    assert sort(first) == (ts_prop, "ASCENDING") and first["limit"] == 200
    assert ts_prop in first["properties"]
    assert filters(second) == [(ts_prop, "GTE", str(T0 + 198))], "the next query starts at the page's newest time"
    assert all("after" not in body for body in fake.bodies)
    if stream == "contacts":  # hs_lastmodifieddate misbehaves in contact search
        assert all("hs_lastmodifieddate" not in json.dumps(b["filterGroups"] + b["sorts"]) for b in fake.bodies)
    final = pages[-1].next_cursor
    assert final is not None and (final["ts"], final["seen"]) == (T0 + 339, ["939"])


# ---- 3. the month-end trap ----------------------------------------------------------------------
def test_a_full_page_sharing_one_timestamp_switches_to_an_id_keyset(hubspot: respx.Router, clock: FakeClock) -> None:
    t1, t2 = T0 + 5_000, T0 + 9_000
    block = [record(5001 + i, t1) for i in range(450)]  # a bulk job stamped 450 records at once
    after_block = record(9001, t2)
    fake = FakeSearch([*block, after_block])
    hubspot.post(f"{CONTACTS}/search").mock(side_effect=fake)
    mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot)), "contacts", incremental(T0))

    got = ids(pages)
    assert sorted(got) == sorted(r["id"] for r in [*block, after_block]), "nothing skipped"
    assert len(got) == len(set(got)), "nothing yielded twice"
    ts, by_time, by_id = "lastmodifieddate", ("lastmodifieddate", "ASCENDING"), ("hs_object_id", "ASCENDING")
    assert [(filters(b), sort(b)) for b in fake.bodies] == [
        ([(ts, "GTE", str(T0))], by_time),
        ([(ts, "EQ", str(t1)), ("hs_object_id", "GT", "0")], by_id),
        ([(ts, "EQ", str(t1)), ("hs_object_id", "GT", "5200")], by_id),
        ([(ts, "EQ", str(t1)), ("hs_object_id", "GT", "5400")], by_id),
        ([(ts, "GT", str(t1))], by_time),
    ]
    assert all("after" not in b for b in fake.bodies)

    # a read resumed from inside the id walk goes on from its id
    k = next(i for i, p in enumerate(pages) if (p.next_cursor or {}).get("id_after") == 5200)
    fake.bodies.clear()
    rest = read(connect(clock, mocked(hubspot)), "contacts", pages[k].next_cursor)
    assert filters(fake.bodies[0]) == [(ts, "EQ", str(t1)), ("hs_object_id", "GT", "5200")]
    done = ids(pages[:k + 1])
    assert sorted(done + ids(rest)) == sorted(got) and not set(done) & set(ids(rest))


def test_month_end_block_in_the_sandbox_yields_each_changed_record_once(clock: FakeClock) -> None:
    store = SandboxStore(contacts=1000, same_ts_block=(100, 450))
    with SandboxServer(store, token=TOKEN) as server:
        first = read(connect(clock, base_url=server.url))
        assert sorted(ids(first)) == store.ids("contacts") and len(ids(first)) == 1000
        changed = store.modify("contacts", count=500, same_ts=True)

        later = read(connect(clock, base_url=server.url), "contacts", first[-1].next_cursor)
        assert sorted(ids(later)) == sorted(changed), "exactly the changed records, each once"

        # from the beginning of time, the 450-record block of base data is walked by id too
        everything = ids(read(connect(clock, base_url=server.url), "contacts", incremental(0)))
        assert sorted(everything) == store.ids("contacts") and len(everything) == 1000
        assert store.stats()["by_status"].keys() == {"200"}


# ---- 4. the 10,000-result cap ---------------------------------------------------------------------
def test_30000_changes_are_read_without_ever_paging_with_after(hubspot: respx.Router, clock: FakeClock) -> None:
    changes = [record(100_000 + i, T0 + 1 + i // 3) for i in range(30_000)]  # three changes a millisecond
    fake = FakeSearch(changes)
    # the fake enforces HubSpot's cap, so paging one query with `after` could not get this far
    assert fake.answer({"sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                        "limit": 200, "after": "9900"}).status_code == 400
    hubspot.post(f"{CONTACTS}/search").mock(side_effect=fake)
    mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot)), "contacts", incremental(T0))

    got = ids(pages)
    assert len(got) == 30_000 == len(set(got))
    assert all("after" not in b for b in fake.bodies) and fake.rejected == 1  # only the probe above
    assert len(fake.bodies) <= math.ceil(30_000 / 197) + 1, "one query per page, overlap at most 3 a page"


def test_12000_changes_against_the_sandbox_which_enforces_the_cap(clock: FakeClock) -> None:
    store = SandboxStore(contacts=12_500)
    with SandboxServer(store, token=TOKEN, rate_limit_max=None) as server:
        before = store.stats()["clock_ms"]  # the newest change so far: everything up to it is read
        changed = store.modify("contacts", count=12_000)
        pages = read(connect(clock, base_url=server.url), "contacts", incremental(before, all_at_ts=True))
        got = ids(pages)
        assert sorted(got) == sorted(changed) and len(got) == len(set(got))
        stats = store.stats()
        assert stats["by_status"] == {"200": stats["total"]}, "no 400 from the cap"
        # a fresh keyset query per page; each re-reads the one change at the previous page's end
        assert stats["requests"]["POST contacts.search"] == 1 + math.ceil((12_000 - 200) / 199)


# ---- 5. deletes -----------------------------------------------------------------------------------
def test_archived_records_since_the_cursor_are_reported_and_a_pass_resumes(
        hubspot: respx.Router, clock: FakeClock) -> None:
    since = T0 + 60_000
    hubspot.post(f"{CONTACTS}/search").respond(json=search_page([]))
    second_page = [archived(14, since + 9), archived(15, since - 3)]
    gone = hubspot.get(CONTACTS, params={"archived": "true"}).mock(side_effect=[
        ok(list_page([archived(11, since - 1000), archived(12, since), archived(13, since + 5)], after="YTI")),
        ok(list_page(second_page)),
        ok(list_page(second_page)),  # for the resumed read
    ])

    pages = read(connect(clock, mocked(hubspot)), "contacts", incremental(T0, archived_since=since))

    assert [p.deleted for p in pages] == [["12", "13"], ["14"]], "archivedAt >= archived_since only"
    assert [p.records for p in pages] == [[], []]
    mid = pages[0].next_cursor
    assert mid is not None and mid["archived_after"] == "YTI" and mid["archived_since"] == since
    params = [c.request.url.params for c in gone.calls]
    assert [(p["archived"], p["limit"], p.get("after")) for p in params] == [("true", "100", None),
                                                                              ("true", "100", "YTI")]
    resumed = read(connect(clock, mocked(hubspot)), "contacts", mid)
    assert [p.deleted for p in resumed] == [["14"]]
    assert gone.calls.last.request.url.params["after"] == "YTI"
    assert resumed[-1].next_cursor == pages[-1].next_cursor


def test_a_record_archived_behind_a_running_pass_is_reported_next_run(
        hubspot: respx.Router, clock: FakeClock) -> None:
    """The archived list cannot be filtered by time and has no documented order: a record archived
    while a pass pages through it, behind the pass's position, is only seen by the next pass."""
    a = T0 + 60_000
    hubspot.post(f"{CONTACTS}/search").respond(json=search_page([]))
    hubspot.get(CONTACTS, params={"archived": "true"}).mock(side_effect=[
        # run 1: id 5 is archived (at a+300) after the first page went by
        ok(list_page([archived(10, a + 100)], after="MTA")),
        ok(list_page([archived(30, a + 400)])),
        # run 2 and run 3 see it
        ok(list_page([archived(5, a + 300), archived(10, a + 100), archived(30, a + 400)])),
        ok(list_page([archived(5, a + 300), archived(10, a + 100), archived(30, a + 400)])),
    ])
    cursor: Cursor | None = incremental(T0, archived_since=a)
    reported: list[set[str]] = []
    since: list[int] = []
    for _run in range(3):
        pages = read(connect(clock, mocked(hubspot)), "contacts", cursor)
        reported.append({d for p in pages for d in p.deleted})
        cursor = pages[-1].next_cursor
        assert cursor is not None
        since.append(cursor["archived_since"])
    assert reported[0] == {"10", "30"}
    assert "5" in reported[1], "a delete behind the running pass must not be lost"
    assert since == sorted(since) and since[-1] > a, "archived_since advances"
    assert reported[2] <= {"5", "30"}


# ---- 6. retries and errors ------------------------------------------------------------------------
def full_cursor(after: str) -> Cursor:
    """A full load that stopped after a page: it resumes at `after`."""
    return {"phase": "full", "after": after, "since": T0, "seen": []}


def test_429_with_retry_after_is_slept_exactly_and_the_page_arrives(hubspot: respx.Router, clock: FakeClock) -> None:
    page = hubspot.get(CONTACTS, params={"archived": "false"}).mock(
        side_effect=[rate_limited("7"), ok(list_page([record(1001, T0)]))])
    hubspot.post(f"{CONTACTS}/search").respond(json=search_page([]))
    mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot)), "contacts", full_cursor("NTI1Cg%3D%3D"))

    assert ids(pages) == ["1001"] and page.call_count == 2
    assert clock.slept == [7.0]
    assert clock.paced == [], "the budget's shared pause had passed when the retry went"


def test_502_and_503_are_retried_with_capped_backoff(hubspot: respx.Router, clock: FakeClock) -> None:
    page = hubspot.get(CONTACTS, params={"archived": "false"}).mock(side_effect=[
        error(502, "Bad Gateway", "BAD_GATEWAY"), error(503, "Service Unavailable", "SERVICE_UNAVAILABLE"),
        ok(list_page([record(1001, T0)]))])
    hubspot.post(f"{CONTACTS}/search").respond(json=search_page([]))
    mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot)), "contacts", full_cursor("NTI1Cg%3D%3D"))

    assert ids(pages) == ["1001"] and page.call_count == 3
    caps = [min(POLICY.max_delay, POLICY.base_delay * 2**k) for k in range(2)]
    assert len(clock.slept) == 2 and all(0 <= d <= cap for d, cap in zip(clock.slept, caps, strict=True))


@pytest.mark.parametrize("failures", [POLICY.max_attempts - 1, POLICY.max_attempts])
def test_500s_either_side_of_the_retry_policy(hubspot: respx.Router, clock: FakeClock, failures: int) -> None:
    first = list_page([record(1001 + i, T0 + i) for i in range(100)], after="cDI")
    last = list_page([record(2001, T0 + 200)])
    live = hubspot.get(CONTACTS, params={"archived": "false"}).mock(side_effect=[
        ok(first), *[error(500, "internal error", "INTERNAL_ERROR")] * failures, ok(last)])
    hubspot.post(f"{CONTACTS}/search").respond(json=search_page([]))
    mount_empty_archive(hubspot)

    pages: list[Page] = []
    if failures < POLICY.max_attempts:
        pages = read(connect(clock, mocked(hubspot)), "contacts", full_cursor("cDE"))
        assert ids(pages)[-1] == "2001" and len(clock.slept) == failures
        return
    conn = connect(clock, mocked(hubspot))
    with pytest.raises(RetriableError) as err:
        for page in conn.read("contacts", full_cursor("cDE")):
            pages.append(page)
    conn.close()
    assert err.value.status == 500 and not isinstance(err.value, RateLimited)
    assert live.call_count == 1 + POLICY.max_attempts and len(clock.slept) == POLICY.max_attempts - 1
    # the engine keeps the last page's cursor; a resume asks for the page that failed
    assert len(pages) == 1 and pages[0].next_cursor == {**full_cursor("cDI")}
    resumed = read(connect(clock, mocked(hubspot)), "contacts", pages[0].next_cursor)
    assert ids(resumed) == ["2001"] and live.calls.last.request.url.params["after"] == "cDI"


@pytest.mark.parametrize(("status", "category"), [(401, "INVALID_AUTHENTICATION"), (403, "MISSING_SCOPES")])
def test_rejected_credentials_are_an_auth_error_not_retried(
        hubspot: respx.Router, clock: FakeClock, status: int, category: str) -> None:
    probe = hubspot.post(f"{CONTACTS}/search").mock(return_value=error(status, "The access token is invalid.", category))
    with pytest.raises(AuthError, match=str(status)):
        read(connect(clock, mocked(hubspot)))
    assert probe.call_count == 1 and clock.slept == []


def test_an_html_page_with_status_200_is_a_fatal_error_with_a_clear_message(
        hubspot: respx.Router, clock: FakeClock) -> None:
    html = "<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head><body>Back soon</body></html>"
    hubspot.get(CONTACTS, params={"archived": "false"}).mock(
        return_value=httpx.Response(200, text=html, headers={"Content-Type": "text/html; charset=utf-8"}))
    with pytest.raises(FatalError) as err:
        read(connect(clock, mocked(hubspot)), "contacts", full_cursor("cDE"))
    assert "not JSON" in str(err.value) and "Scheduled maintenance" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# ---- 7. the search POST is idempotent ----------------------------------------------------------------
def test_the_search_post_is_retried_on_5xx(hubspot: respx.Router, clock: FakeClock) -> None:
    search = hubspot.post(f"{CONTACTS}/search").mock(side_effect=[
        error(503, "Service Unavailable", "SERVICE_UNAVAILABLE"), error(504, "Gateway Timeout", "GATEWAY_TIMEOUT"),
        ok(search_page([record(1001, T0 + 5)]))])
    mount_empty_archive(hubspot)

    pages = read(connect(clock, mocked(hubspot)), "contacts", incremental(T0))

    assert ids(pages) == ["1001"] and search.call_count == 3 and len(clock.slept) == 2
    assert len({c.request.content for c in search.calls}) == 1, "the same query each time"


# ---- 8. the token stays secret ------------------------------------------------------------------
ECHOES = {
    "400 echoing the token": (error(400, f"Invalid token {TOKEN}", "VALIDATION_ERROR"), FatalError),
    "401 echoing the header": (error(401, f"Authorization: Bearer {TOKEN} is not valid", "INVALID_AUTHENTICATION"),
                               AuthError),
    "500s echoing the token": (error(500, f"upstream said token={TOKEN}", "INTERNAL_ERROR"), RetriableError),
    "200 html echoing the token": (httpx.Response(200, text=f"<html>proxy: bad credential {TOKEN}</html>"),
                                   FatalError),
    "200 json that is no object": (httpx.Response(200, json=["token", TOKEN]), FatalError),
}


@pytest.mark.parametrize("case", ECHOES)
def test_the_token_never_appears_in_an_error(hubspot: respx.Router, clock: FakeClock, case: str) -> None:
    response, expected = ECHOES[case]
    hubspot.get(CONTACTS, params={"archived": "false"}).mock(
        side_effect=lambda _req: httpx.Response(response.status_code, headers=response.headers,
                                                content=response.content))
    with pytest.raises(expected) as err:
        read(connect(clock, mocked(hubspot)), "contacts", full_cursor("cDE"))
    chain: list[BaseException] = []
    exc: BaseException | None = err.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for link in chain:
        assert TOKEN not in str(link) and TOKEN not in repr(link.args), f"{type(link).__name__} leaks the token"
    assert "***" in str(err.value), "the echo is still there, masked"


# ---- 9. the base URL ---------------------------------------------------------------------------
def test_an_eu_base_url_is_the_host_called(clock: FakeClock) -> None:
    eu = respx.Router(base_url="https://api-eu1.hubapi.com", assert_all_called=True)
    eu.post(f"{CONTACTS}/search").respond(json=search_page([]))
    eu.get(CONTACTS, params={"archived": "false"}).respond(json=list_page([record(1001, T0)]))
    mount_empty_archive(eu)

    pages = read(connect(clock, mocked(eu), base_url="https://api-eu1.hubapi.com"))

    assert ids(pages) == ["1001"]
    assert {c.request.url.host for c in eu.calls} == {"api-eu1.hubapi.com"}
    eu.assert_all_called()
