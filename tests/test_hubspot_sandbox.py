"""The HubSpot CRM v3 sandbox, exercised through real HTTP on loopback (SandboxServer + httpx)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from connectors.hubspot.sandbox_data import DEFAULT_PROPERTIES, parse_time

TOKEN = "sandbox-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = 1_700_000_000_000
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(store: SandboxStore, **options: Any) -> Iterator[tuple[SandboxServer, httpx.Client]]:
    with SandboxServer(store, **options) as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        yield server, client


@pytest.fixture(scope="module")
def shared() -> Iterator[httpx.Client]:
    """A read-only 2,500-contact sandbox shared by the tests that do not change data."""
    with serve(SandboxStore(contacts=2500)) as (_, client):
        yield client


def search(client: httpx.Client, body: dict[str, Any], object_type: str = "contacts") -> httpx.Response:
    return client.post(f"/crm/v3/objects/{object_type}/search", json=body)


def flt(prop: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    f = {"propertyName": prop, "operator": op, **extra}
    if value is not None:
        f["value"] = str(value)
    return f


def body(*filters: dict[str, Any], sort: str | None = None, desc: bool = False, **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"filterGroups": [{"filters": list(filters)}] if filters else [], **extra}
    if sort:
        b["sorts"] = [{"propertyName": sort, "direction": "DESCENDING" if desc else "ASCENDING"}]
    return b


def search_all(client: httpx.Client, b: dict[str, Any], object_type: str = "contacts") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = search(client, b, object_type)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["results"]
        if "paging" not in page:
            return out
        b = {**b, "after": page["paging"]["next"]["after"]}


def list_all(client: httpx.Client, params: dict[str, Any]) -> tuple[list[str], int]:
    ids: list[str] = []
    pages, after = 0, None
    while True:
        r = client.get("/crm/v3/objects/contacts", params={**params, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        page, pages = r.json(), pages + 1
        ids += [o["id"] for o in page["results"]]
        if "paging" not in page:
            return ids, pages
        after = page["paging"]["next"]["after"]


def ms(value: str) -> int:
    got = parse_time(value)
    assert got is not None, value
    return got


# ---- list -------------------------------------------------------------------------------------
def test_list_paging_visits_every_contact_exactly_once() -> None:
    store = SandboxStore(contacts=1234)
    store.archive("contacts", ["1001", "1500", "2234"])
    with serve(store) as (_, client):
        ids, pages = list_all(client, {"limit": 100})
        assert ids == store.ids("contacts") and len(set(ids)) == 1231
        assert pages == math.ceil(1231 / 100)
        first = client.get("/crm/v3/objects/contacts", params={"limit": 500}).json()
        assert len(first["results"]) == 100  # clamped to 100
        nxt = first["paging"]["next"]
        assert not nxt["after"].isdigit()  # opaque
        via_link = client.get(nxt["link"]).json()
        via_after = client.get("/crm/v3/objects/contacts", params={"limit": 100, "after": nxt["after"]}).json()
        assert via_link["results"] == via_after["results"] and via_link["results"][0]["id"] == "1102"
        assert client.get("/crm/v3/objects/contacts", params={"after": "!!"}).status_code == 400


def test_list_paging_is_stable_while_records_change() -> None:
    store = SandboxStore(contacts=1000)
    with serve(store) as (_, client):
        seen: list[str] = []
        page = client.get("/crm/v3/objects/contacts", params={"limit": 100}).json()
        for n in range(100):
            seen += [o["id"] for o in page["results"]]
            if n == 2:  # mid-scan: edits everywhere, deletes ahead of the cursor, new records
                store.modify("contacts", count=200)
                store.archive("contacts", ["1900", "1950"])
                created = store.create("contacts", 5)
            if "paging" not in page:
                break
            after = page["paging"]["next"]["after"]
            page = client.get("/crm/v3/objects/contacts", params={"limit": 100, "after": after}).json()
        expected = [str(i) for i in range(1001, 2001) if i not in (1900, 1950)] + created
        assert seen == expected


def test_archived_true_returns_only_archived() -> None:
    store = SandboxStore(contacts=300)
    with serve(store) as (_, client):
        gone = client.post("/_sandbox/archive", json={"type": "contacts", "ids": ["1010", "1200", "1005"]}).json()
        assert gone["ids"] == ["1010", "1200", "1005"]
        ids, _ = list_all(client, {"archived": "true", "limit": 2})
        assert ids == ["1005", "1010", "1200"]
        page = client.get("/crm/v3/objects/contacts", params={"archived": "true"}).json()
        for obj in page["results"]:
            assert obj["archived"] is True and obj["archivedAt"].endswith("Z")
            assert obj["updatedAt"] == obj["archivedAt"]
        live, _ = list_all(client, {"limit": 100})
        assert len(live) == 297 and not set(live) & {"1005", "1010", "1200"}
        found = search_all(client, body(flt("hs_object_id", "LTE", 1300), limit=200))
        assert len(found) == 297 and all(o["archived"] is False for o in found)
        assert client.get("/crm/v3/objects/contacts/1010").status_code == 404
        assert client.get("/crm/v3/objects/contacts/1010", params={"archived": "true"}).json()["archived"] is True


# ---- search -----------------------------------------------------------------------------------
def test_search_gte_with_ascending_sort_returns_increasing_timestamps(shared: httpx.Client) -> None:
    b = body(flt("lastmodifieddate", "GTE", BASE + 500_000), sort="lastmodifieddate", limit=200)
    first = search(shared, b).json()
    assert first["total"] == 2000 and first["paging"] == {"next": {"after": "200"}}
    found = search_all(shared, b)
    stamps = [ms(o["properties"]["lastmodifieddate"]) for o in found]
    assert len(found) == 2000 and stamps[0] == BASE + 500_000
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert all(o["updatedAt"] == o["properties"]["lastmodifieddate"] for o in found)
    iso = found[0]["properties"]["lastmodifieddate"]  # ISO values are accepted too
    assert search(shared, body(flt("lastmodifieddate", "GTE", iso))).json()["total"] == 2000
    desc = search(shared, body(flt("lastmodifieddate", "GTE", BASE), sort="lastmodifieddate", desc=True)).json()
    assert [o["id"] for o in desc["results"]] == [str(i) for i in range(3500, 3490, -1)]


def test_search_between(shared: httpx.Client) -> None:
    b = body(flt("hs_lastmodifieddate", "BETWEEN", BASE + 100_000, highValue=str(BASE + 199_000)),
             sort="hs_lastmodifieddate", limit=200)
    r = search(shared, b).json()
    assert r["total"] == 100 and "paging" not in r
    assert [o["id"] for o in r["results"]] == [str(i) for i in range(1101, 1201)]
    companies = search(shared, body(flt("hs_lastmodifieddate", "BETWEEN", BASE, highValue=str(BASE + 9_000))),
                       "companies").json()
    assert companies["total"] == 10


def test_search_object_id_gt_sorted_by_object_id(shared: httpx.Client) -> None:
    found = search_all(shared, body(flt("hs_object_id", "GT", 3000), sort="hs_object_id", limit=200))
    assert [o["id"] for o in found] == [str(i) for i in range(3001, 3501)]
    desc = search(shared, body(flt("hs_object_id", "GT", 3000), sort="hs_object_id", desc=True, limit=3)).json()
    assert [o["id"] for o in desc["results"]] == ["3500", "3499", "3498"] and desc["total"] == 500


def test_search_10000_cap_returns_400() -> None:
    with serve(SandboxStore(contacts=12_000)) as (_, client):
        b = body(flt("lastmodifieddate", "GTE", 0), sort="lastmodifieddate", limit=200)
        ok = search(client, {**b, "after": "9800"}).json()
        assert ok["total"] == 12_000 and ok["paging"]["next"]["after"] == "10000"
        for after, limit in (("10000", 200), ("9900", 200), ("10000", 1)):
            r = search(client, {**b, "after": after, "limit": limit})
            assert r.status_code == 400, (after, limit)
            err = r.json()
            assert err["status"] == "error" and err["category"] == "VALIDATION_ERROR" and err["correlationId"]
            assert "10000" in err["message"]
        assert search(client, {**b, "limit": 201}).status_code == 400


def test_same_ts_block_shares_one_timestamp_and_id_keyset_gets_past_it() -> None:
    store = SandboxStore(contacts=15_000, same_ts_block=(1000, 12_000))
    t = BASE + 1000 * 1000
    with serve(store) as (_, client):
        eq = search(client, body(flt("lastmodifieddate", "EQ", t), limit=200)).json()
        assert eq["total"] == 12_000
        assert {o["properties"]["lastmodifieddate"] for o in eq["results"]} == {eq["results"][0]["updatedAt"]}
        # The trap: a time-keyset restart cannot move past 10,000 records sharing one time.
        trap = body(flt("lastmodifieddate", "GTE", t), sort="lastmodifieddate", limit=200, after="10000")
        assert search(client, trap).status_code == 400
        # The way out: pin the time, keyset on hs_object_id, restart before the cap.
        seen: list[str] = []
        last_id = 0
        while True:
            b = body(flt("lastmodifieddate", "GTE", t), flt("lastmodifieddate", "LTE", t),
                     flt("hs_object_id", "GT", last_id), sort="hs_object_id", limit=200)
            page = search(client, b).json()
            seen += [o["id"] for o in page["results"]]
            if "paging" not in page:
                break
            last_id = int(seen[-1])
        assert seen == [str(1001 + i) for i in range(1000, 13_000)]


def test_modify_puts_records_after_everything() -> None:
    store = SandboxStore(contacts=2000)
    with serve(store) as (_, client):
        changed = store.modify("contacts", count=5)
        api_changed = client.post("/_sandbox/modify", json={"type": "contacts", "ids": ["1002"],
                                                            "properties": {"firstname": "Renamed"}}).json()["ids"]
        newest = search(client, body(flt("lastmodifieddate", "GTE", BASE), sort="lastmodifieddate", desc=True,
                                     properties=["jobtitle", "firstname", "lastmodifieddate", "hs_lastmodifieddate"],
                                     limit=6)).json()
        assert [o["id"] for o in newest["results"]] == [*api_changed, *reversed(changed)]
        assert newest["total"] == 2000  # moved, not duplicated
        base_max = BASE + 1999 * 1000
        for o in newest["results"]:
            p = o["properties"]
            assert ms(p["lastmodifieddate"]) > base_max and p["lastmodifieddate"] == p["hs_lastmodifieddate"]
            assert o["updatedAt"] == p["lastmodifieddate"]
        assert newest["results"][0]["properties"]["firstname"] == "Renamed"
        rotated = client.get(f"/crm/v3/objects/contacts/{changed[0]}", params={"properties": "jobtitle"}).json()
        assert rotated["properties"]["jobtitle"] != SandboxStore(contacts=2000).raw(
            "contacts", int(changed[0]) - 1001)["jobtitle"]
        with pytest.raises(ValueError):
            store.modify("contacts", ids=["1003"], properties={"lastmodifieddate": "0"})


def test_modify_same_ts_and_create() -> None:
    store = SandboxStore(contacts=100, deals=10)
    with serve(store) as (_, client):
        ids = store.modify("deals", count=4, same_ts=True)
        r = search(client, body(flt("hs_lastmodifieddate", "GT", BASE + 99_000), sort="hs_lastmodifieddate"),
                   "deals").json()
        assert sorted(o["id"] for o in r["results"]) == sorted(ids)
        assert len({o["properties"]["hs_lastmodifieddate"] for o in r["results"]}) == 1
        new = client.post("/_sandbox/create", json={"type": "contacts", "count": 3}).json()["ids"]
        assert new == ["1101", "1102", "1103"]
        tail = search(client, body(flt("lastmodifieddate", "GT", BASE + 99_000), sort="lastmodifieddate")).json()
        assert [o["id"] for o in tail["results"]] == new
        assert tail["results"][0]["createdAt"] == tail["results"][0]["updatedAt"]
        ids_listed, _ = list_all(client, {"limit": 100})
        assert ids_listed[-3:] == new and len(ids_listed) == 103


def test_search_other_filters_match_a_brute_force_scan(shared: httpx.Client) -> None:
    store = SandboxStore(contacts=2500)
    rows = [store.raw("contacts", i) for i in range(2500)]

    def total(*filters: dict[str, Any], groups: list[list[dict[str, Any]]] | None = None, **extra: Any) -> int:
        b = {"filterGroups": [{"filters": g} for g in groups]} if groups else body(*filters)
        r = search(shared, {**b, **extra, "limit": 1})
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    leads = sum(1 for r in rows if r["lifecyclestage"] == "lead")
    assert total(flt("lifecyclestage", "EQ", "lead")) == leads
    assert total(flt("lifecyclestage", "NEQ", "lead")) == 2500 - leads
    assert total(flt("lifecyclestage", "IN", values=["lead", "customer"])) == sum(
        1 for r in rows if r["lifecyclestage"] in ("lead", "customer"))
    has_phone = sum(1 for r in rows if r["phone"])
    assert 0 < has_phone < 2500
    assert total(flt("phone", "HAS_PROPERTY")) == has_phone
    assert total(flt("phone", "NOT_HAS_PROPERTY")) == 2500 - has_phone
    early = [flt("hs_object_id", "LT", 1100)]
    assert total(groups=[early, [flt("lifecyclestage", "EQ", "customer")]]) == sum(
        1 for i, r in enumerate(rows) if i < 99 or r["lifecyclestage"] == "customer")
    assert total(flt("lastmodifieddate", "GT", BASE + 2_000_000), flt("lifecyclestage", "EQ", "lead")) == sum(
        1 for i, r in enumerate(rows) if i > 2000 and r["lifecyclestage"] == "lead")
    assert total(flt("firstname", "CONTAINS_TOKEN", "grace")) == sum(1 for r in rows if r["firstname"] == "Grace")
    assert total(query="grace") >= sum(1 for r in rows if r["firstname"] == "Grace")
    by_created = search(shared, body(sort="createdate", desc=True, limit=50)).json()
    stamps = [ms(o["properties"]["createdate"]) for o in by_created["results"]]
    assert stamps == sorted(stamps, reverse=True) and stamps[0] == max(r["createdate"] for r in rows)
    bad: dict[str, Any]
    for bad in ({"filterGroups": [{"filters": [flt("nope", "EQ", 1)]}]},
                {"filterGroups": [{"filters": [flt("email", "LIKE", 1)]}]},
                {"filterGroups": [{"filters": []}] * 7}):
        assert search(shared, bad).status_code == 400


# ---- shapes ------------------------------------------------------------------------------------
def test_properties_defaults_associations_and_errors(shared: httpx.Client) -> None:
    page = shared.get("/crm/v3/objects/contacts").json()
    assert len(page["results"]) == 10
    obj = page["results"][0]
    assert list(obj) == ["id", "properties", "createdAt", "updatedAt", "archived"]
    assert set(obj["properties"]) == set(DEFAULT_PROPERTIES["contacts"])
    assert obj["properties"]["hs_object_id"] == obj["id"] == "1001"
    assert obj["createdAt"].endswith("Z") and len(obj["createdAt"]) == 24
    phoneless = search(shared, body(flt("phone", "NOT_HAS_PROPERTY"), properties=["phone", "no_such_prop"])).json()
    assert phoneless["results"][0]["properties"] == {"phone": None}  # known: null; unknown: ignored
    one = shared.get("/crm/v3/objects/contacts/1001", params={"properties": "email,company,associatedcompanyid",
                                                              "associations": "companies"}).json()
    assert "@" in one["properties"]["email"]
    assert one["associations"] == {"companies": {"results": [
        {"id": one["properties"]["associatedcompanyid"], "type": "contact_to_company"}]}}
    deals = shared.get("/crm/v3/objects/deals", params={"associations": "companies", "limit": 3}).json()
    for d in deals["results"]:
        assert set(d["properties"]) == set(DEFAULT_PROPERTIES["deals"])
        assert d["properties"]["pipeline"] == "default" and float(d["properties"]["amount"]) > 0
        [link] = d["associations"]["companies"]["results"]
        assert link["type"] == "deal_to_company" and link["id"].startswith("5")
    company = shared.get("/crm/v3/objects/companies/5000001").json()
    assert set(company["properties"]) == set(DEFAULT_PROPERTIES["companies"])
    missing = shared.get("/crm/v3/objects/contacts/99999999")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    unknown = shared.get("/crm/v3/objects/widgets")
    assert unknown.status_code == 400 and "widgets" in unknown.json()["message"]
    assert shared.get("/crm/v3/objects/0-1").json()["results"] == page["results"]  # objectTypeId alias


def test_bad_every_makes_unmappable_contacts() -> None:
    store = SandboxStore(contacts=40, bad_every=10)
    with serve(store) as (_, client):
        page = client.get("/crm/v3/objects/contacts", params={"limit": 100}).json()["results"]
        bad = [o for o in page if "@" not in o["properties"]["email"]]
        assert [o["id"] for o in bad] == ["1010", "1020", "1030", "1040"]
        assert all(o["properties"]["createdate"] == "yesterday-ish" and ms(o["createdAt"]) for o in bad)
        assert all(ms(o["properties"]["createdate"]) for o in page if o not in bad)


# ---- faults, auth, rate limits, stats -----------------------------------------------------------
def test_fail_next_gives_429_with_retry_after_then_succeeds() -> None:
    store = SandboxStore(contacts=50)
    with serve(store) as (_, client):
        store.fail_next(2, status=429, retry_after=3)
        for _ in range(2):
            r = client.get("/crm/v3/objects/contacts")
            assert r.status_code == 429 and r.headers["Retry-After"] == "3"
            err = r.json()
            assert err["errorType"] == "RATE_LIMIT" and err["policyName"] == "TEN_SECONDLY_ROLLING"
            assert err["status"] == "error" and err["correlationId"]
        assert client.get("/crm/v3/objects/contacts").status_code == 200
        client.post("/_sandbox/fail", json={"count": 1, "status": 502, "path_prefix": "/crm/v3/objects/deals"})
        assert search(client, body()).status_code == 200
        r = search(client, body(), "deals")
        assert r.status_code == 502 and r.json()["status"] == "error" and "Retry-After" not in r.headers
        assert search(client, body(), "deals").status_code == 200
        stats = client.get("/_sandbox/stats").json()
        assert stats["faults_injected"] == 3 and stats["faults_pending"] == 0
        assert stats["by_status"] == {"200": 3, "429": 2, "502": 1}


def test_401_without_or_with_a_wrong_token() -> None:
    with serve(SandboxStore(contacts=10)) as (server, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.get(f"{server.url}/crm/v3/objects/contacts", headers=headers)
            assert r.status_code == 401
            err = r.json()
            assert err["category"] == "INVALID_AUTHENTICATION" and err["status"] == "error" and err["correlationId"]
        assert "credentials not found" in httpx.get(f"{server.url}/crm/v3/objects/contacts").json()["message"]
    with SandboxServer(SandboxStore(contacts=10), token=None) as open_server:
        assert httpx.get(f"{open_server.url}/crm/v3/objects/contacts").status_code == 200


def test_rate_limit_headers_and_optional_enforcement() -> None:
    now = [0.0]
    with serve(SandboxStore(contacts=10), rate_limit_max=3, enforce_rate_limit=True, clock=lambda: now[0]) as (_, c):
        first = c.get("/crm/v3/objects/contacts")
        assert first.headers["X-HubSpot-RateLimit-Max"] == "3"
        assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert first.headers["X-HubSpot-RateLimit-Remaining"] == "2"
        s = search(c, body())
        assert s.status_code == 200 and not any(h.lower().startswith("x-hubspot-ratelimit") for h in s.headers)
        assert [c.get("/crm/v3/objects/contacts").status_code for _ in range(3)] == [200, 200, 429]
        now[0] = 10.5  # the ten-second window has rolled on
        assert c.get("/crm/v3/objects/contacts").status_code == 200
    with serve(SandboxStore(contacts=10), rate_limit_max=None) as (_, c):
        assert "X-HubSpot-RateLimit-Max" not in c.get("/crm/v3/objects/contacts").headers


def test_stats_count_requests_per_method_and_kind() -> None:
    store = SandboxStore(contacts=10)
    with serve(store) as (_, client):
        client.get("/crm/v3/objects/contacts")
        client.get("/crm/v3/objects/contacts")
        client.get("/crm/v3/objects/contacts/1001")
        search(client, body(), "companies")
        assert store.stats()["requests"] == {"GET contacts.get": 1, "GET contacts.list": 2,
                                             "POST companies.search": 1}
        client.post("/_sandbox/reset-stats")
        assert client.get("/_sandbox/stats").json()["total"] == 0


# ---- determinism and scale ---------------------------------------------------------------------
def test_same_seed_gives_identical_pages() -> None:
    def pages(seed: int) -> list[Any]:
        store = SandboxStore(contacts=700, seed=seed, bad_every=50)
        store.modify("contacts", count=20)
        with serve(store) as (_, client):
            got: list[Any] = []
            for t in ("contacts", "companies", "deals"):
                listed = client.get(f"/crm/v3/objects/{t}", params={"limit": 100}).json()
                listed.get("paging", {}).get("next", {}).pop("link", None)  # names the port
                got.append(listed)
                got.append(search(client, body(flt("hs_lastmodifieddate", "GTE", BASE), sort="hs_lastmodifieddate",
                                               limit=200, after="500"), t).json())
            return got

    assert pages(7) == pages(7)
    assert pages(8)[0] != pages(7)[0]


def test_million_contacts_search_near_the_end() -> None:
    started = time.perf_counter()
    store = SandboxStore(contacts=1_000_000)
    store.modify("contacts", count=1000)
    with serve(store) as (_, client):
        t0 = time.perf_counter()
        near_end = search(client, body(flt("lastmodifieddate", "GT", BASE + 999_990_000),
                                       sort="lastmodifieddate", limit=200)).json()
        t1 = time.perf_counter()
        assert near_end["total"] == 9 + 1000
        ids = [o["id"] for o in near_end["results"]]
        assert ids[0] == str(1001 + 999_991) and len(ids) == 200
        by_id = search(client, body(flt("hs_object_id", "GT", 1_000_900), sort="hs_object_id", limit=200)).json()
        assert [o["id"] for o in by_id["results"]] == [str(i) for i in range(1_000_901, 1_001_001)]
        deep = search(client, body(flt("lastmodifieddate", "GTE", BASE), sort="lastmodifieddate",
                                   limit=200, after="9800")).json()
        assert deep["total"] == 1_000_000 and len(deep["results"]) == 200
        t2 = time.perf_counter()
        for _ in range(20):
            client.get("/crm/v3/objects/contacts", params={"limit": 100})
        t3 = time.perf_counter()
    cpu0 = time.process_time()
    for k in range(50):
        page, _ = store.list_page("contacts", 100, None, False)
        orjson.dumps({"results": [store.render("contacts", i + k * 100, DEFAULT_PROPERTIES["contacts"])
                                  for i in page]})
    cpu = (time.process_time() - cpu0) / 50 * 1000
    print(f"\n1M store: setup {t0 - started:.2f}s, search near end {1000 * (t1 - t0):.1f} ms, "
          f"3 searches {1000 * (t2 - t0):.1f} ms, list page over HTTP {1000 * (t3 - t2) / 20:.2f} ms, "
          f"list page render+json CPU {cpu:.2f} ms")


def test_cli_runs_as_a_separate_process() -> None:
    cmd = [sys.executable, "-m", "connectors.hubspot.sandbox", "--contacts", "300", "--bad-every", "7",
           "--token", "t0k"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = json.loads(proc.stdout.readline())["url"]
            assert url.startswith("http://127.0.0.1:")
            stats = httpx.get(f"{url}/_sandbox/stats").json()
            assert stats["records"]["contacts"]["total"] == 300
            assert httpx.get(f"{url}/crm/v3/objects/contacts", headers={"Authorization": "Bearer t0k"}).status_code == 200
            assert httpx.post(f"{url}/_sandbox/modify", json={"type": "contacts", "count": 2}).json()["ids"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.stdout.read() == ""  # exactly one line


# ---- engagements, batch writes, owners, pipelines -------------------------------------------------
def test_batch_endpoints_follow_hubspots_limits_and_shapes() -> None:
    store = SandboxStore(contacts=30)
    with serve(store) as (_, client):
        def post(action: str, inputs: list[dict[str, Any]], t: str = "contacts") -> httpx.Response:
            return client.post(f"/crm/v3/objects/{t}/batch/{action}", json={"inputs": inputs})

        too_many = post("update", [{"id": str(1001 + k), "properties": {}} for k in range(101)])
        assert too_many.status_code == 400 and "limit is 100" in too_many.json()["message"]
        dupes = post("update", [{"id": "1001", "properties": {}}, {"id": "1001", "properties": {}}])
        assert dupes.status_code == 400 and "Duplicate IDs" in dupes.json()["message"]
        taken = store.raw("contacts", 3)["email"]
        conflict = post("create", [{"properties": {"email": taken}}])
        assert conflict.status_code == 409 and conflict.json()["message"] == "Contact already exists. Existing ID: 1004"
        created = post("create", [{"properties": {"email": "a@example.org"}, "objectWriteTraceId": "t1"}])
        assert created.status_code == 201 and created.json()["results"][0]["objectWriteTraceId"] == "t1"
        non_unique = post("upsert", [{"idProperty": "name", "id": "Acme", "properties": {}}], "companies")
        assert non_unique.status_code == 400 and "non-unique" in non_unique.json()["message"]
        assert client.post("/crm/v3/objects/contacts/batch/merge", json={"inputs": []}).status_code == 404
        assert created.headers["X-HubSpot-RateLimit-Max"] == "190", "writes count against the window too"


def test_engagements_list_and_search_like_other_objects() -> None:
    store = SandboxStore(contacts=40, engagements=30)
    with serve(store) as (_, client):
        r = client.get("/crm/v3/objects/0-48", params={"limit": 100, "properties": "hs_timestamp,hs_call_status"})
        assert r.status_code == 200 and len(r.json()["results"]) == 30, "0-48 is the calls object type id"
        assert all(parse_time(o["properties"]["hs_timestamp"]) for o in r.json()["results"])
        changed = store.modify("tasks", count=5)
        found = search_all(client, body(flt("hs_lastmodifieddate", "GTE", store.stats()["clock_ms"] - 4),
                                        sort="hs_lastmodifieddate", limit=200), "tasks")
        assert sorted(o["id"] for o in found) == sorted(changed)
        owners = client.get("/crm/v3/owners", params={"limit": 3}).json()
        rest = client.get("/crm/v3/owners", params={"limit": 3, "after": owners["paging"]["next"]["after"]}).json()
        assert len(owners["results"]) + len(rest["results"]) == 4 and "paging" not in rest
        assert client.get("/crm/v3/pipelines/contacts").status_code == 404
