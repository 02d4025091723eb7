"""HubSpot cassettes (fixtures/hubspot/*.yaml) replayed through the connector with vcrpy.

The cassettes were composed from HubSpot's documented examples, not recorded (see
fixtures/hubspot/README.md). Replay is `record_mode="none"`: a request that no interaction
matches fails the test, and nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import vcr
import yaml
from vcr.request import Request as VcrRequest

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.config import parse_config
from hub.mapping import load_mappings
from hub.registry import ConnectorFactory
from hub.sdk import Connector, Cursor, Page

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASSETTES = FIXTURES / "hubspot"
TOKEN = "pat-na1-5e4d3c2b-1a09-4f8e-8d7c-6b5a4f3e2d1c"
MAPPINGS = load_mappings(None)


def _query(uri: str) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in parse_qsl(urlsplit(uri).query, keep_blank_values=True) if k != "properties")


def _search(body: bytes | str | None) -> Any:
    if not body:
        return None
    parsed = json.loads(body)
    parsed.pop("properties", None)
    return parsed


def hubspot_request(r1: VcrRequest, r2: VcrRequest) -> None:
    """Match what the connector decides (method, URL, query, search body), except the
    `properties` it asks for: they follow the mapping and the config."""
    assert r1.method == r2.method
    assert (r1.scheme, r1.host, r1.port, r1.path) == (r2.scheme, r2.host, r2.port, r2.path)
    assert _query(r1.uri) == _query(r2.uri), "query parameters differ"
    assert _search(r1.body) == _search(r2.body), "search bodies differ"


def hubspot_vcr(directory: Path, record_mode: str = "none") -> vcr.VCR:
    cassettes = vcr.VCR(cassette_library_dir=str(directory), record_mode=record_mode, match_on=["hubspot"],
                        filter_headers=["authorization"])
    cassettes.register_matcher("hubspot", hubspot_request)
    return cassettes


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay should need no retry (asked to sleep {seconds}s)")


def connector(base_url: str = "https://api.hubapi.com", **options: Any) -> Connector:
    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "base_url": base_url, "auth": {"token": TOKEN},
                                              "search_lag_ms": 0, **options}}})
    return ConnectorFactory(cfg, sleep=no_retry).build("hs")


def read(conn: Connector, stream: str, cursor: Cursor | None = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_contacts_full_load_replays_to_records_deletes_and_cursor() -> None:
    with hubspot_vcr(CASSETTES).use_cassette("contacts_full_load.yaml") as cassette:
        pages = read(connector(), "contacts")
    assert cassette.all_played and cassette.play_count == 5 == sum(p.requests for p in pages)

    records = [r for p in pages for r in p.records]
    assert [r.external_id for r in records] == ["501", "502", "512"], "512 once, though the search returns it too"
    assert records[2].updated_at == "2019-12-07T16:50:06.678Z"
    mapping = MAPPINGS.stream("hs", "hubspot", "contacts")
    mapped = {r.external_id: mapping.map(r.data) for r in records}
    assert {k: mapped["501"].values[k] for k in ("email", "first_name", "last_name", "phone", "lifecycle_stage")} == {
        "email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe", "phone": "+16175550101",
        "lifecycle_stage": "lead"}
    assert mapped["502"].refs == {"account_id": "5001"} and mapped["502"].values["phone"] is None
    assert mapped["512"].values["updated_at"] == datetime(2019, 12, 7, 16, 50, 6, 678000, tzinfo=UTC)
    assert [d for p in pages for d in p.deleted] == ["498"]

    archived_at = ms("2019-11-15T10:00:00.000Z")
    assert pages[-1].next_cursor == {
        "phase": "incremental", "ts": ms("2019-12-07T16:50:06.678Z"), "seen": ["512"], "all_at_ts": False,
        "id_after": None, "collapsed": False, "archived_since": archived_at, "archived_after": None,
        "archived_max": None, "archived_floor": archived_at}


def test_companies_incremental_replays_without_after_and_skips_the_overlap() -> None:
    start = {"phase": "incremental", "ts": 1572480000000, "seen": [], "all_at_ts": False, "id_after": None,
             "collapsed": False, "archived_since": 0, "archived_after": None, "archived_max": None}
    with hubspot_vcr(CASSETTES).use_cassette("companies_incremental.yaml") as cassette:
        pages = read(connector(search_page_size=2), "companies", start)
    assert cassette.all_played and cassette.play_count == 4

    records = [r for p in pages for r in p.records]
    assert [r.external_id for r in records] == ["512", "513", "514"]
    mapping = MAPPINGS.stream("hs", "hubspot", "companies")
    mapped = {r.external_id: mapping.map(r.data).values for r in records}
    assert {k: mapped["512"][k] for k in ("name", "domain", "industry")} == {
        "name": "HubSpot", "domain": "hubspot.com", "industry": "COMPUTER_SOFTWARE"}
    assert mapped["514"]["updated_at"] == datetime(2019, 12, 9, 14, 0, tzinfo=UTC)
    assert [d for p in pages for d in p.deleted] == ["498"]
    final = pages[-1].next_cursor
    assert final is not None
    assert (final["ts"], final["seen"], final["archived_since"]) == (
        ms("2019-12-09T14:00:00.000Z"), ["514"], ms("2019-12-01T00:00:00.000Z"))


def test_calls_incremental_replays_with_associations_from_v4() -> None:
    start = {"phase": "incremental", "ts": 1615944764872, "seen": [], "all_at_ts": False, "id_after": None,
             "collapsed": False, "archived_since": 0, "archived_after": None, "archived_max": None}
    with hubspot_vcr(CASSETTES).use_cassette("calls_incremental.yaml") as cassette:
        pages = read(connector(), "calls", start)
    assert cassette.all_played and cassette.play_count == 5 == sum(p.requests for p in pages)

    acts = {r.external_id: r.activity for p in pages for r in p.records}
    first, missed = acts["12632185234"], acts["12632185240"]
    assert first is not None and missed is not None
    assert (first.type, first.occurred_at, first.subject, first.duration_s, first.status) == (
        "call", "2021-03-17T01:32:44.872Z", "Support call", 3, "completed")
    assert first.refs == {"contact": "501", "account": "5001", "opportunity": "9001"}
    assert [(p.role, p.phone or p.user_id) for p in first.participants] == [
        ("caller", "(857) 829 5489"), ("callee", "(509) 999 9999"), ("agent", "11349275740")]
    assert (missed.direction, missed.status, missed.refs) == ("inbound", "missed", {"contact": "502"})


def test_contacts_batch_upsert_replays_to_one_result_per_change() -> None:
    changes = [{"fields": {"email": "jdoe@example.com", "title": "VP Sales"}, "key": "seq-101"},
               {"fields": {"email": "nobody@@example", "first_name": "No"}, "key": "seq-102"},
               {"id": "501", "fields": {"lifecycle_stage": "customer"}, "key": "seq-103"}]
    conn = connector()
    with hubspot_vcr(CASSETTES).use_cassette("contacts_batch_upsert.yaml") as cassette:
        try:
            results = conn.write("contacts", changes)
        finally:
            conn.close()
    assert cassette.all_played and cassette.play_count == 2
    assert [(r.external_id, r.ok, r.created, r.key) for r in results] == [
        ("512", True, False, "seq-101"), ("nobody@@example", False, False, "seq-102"), ("501", True, False, "seq-103")]
    assert "VALIDATION_ERROR" in (results[1].error or "") and "INVALID_EMAIL" in (results[1].error or "")


# ---- no secrets in fixtures ---------------------------------------------------------------------
SECRET_LOOKING = {
    "an Authorization header": re.compile(r"(?im)\b(proxy-)?authorization\b['\"]?\s*[:=]"),
    "a bearer token": re.compile(r"(?i)\bbearer\s+[a-z0-9._~+/-]{6,}"),
    "a HubSpot private-app token": re.compile(r"(?i)\bpat-[a-z]{2,4}\d*-[0-9a-z-]{6,}"),
    "a secret-named key": re.compile(r"(?i)\b(hapikey|access_token|refresh_token|client_secret|api_key)\b['\"]?\s*[:=]"),
}
CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}


def secret_problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems = [f"{what}: {m.group(0)!r}" for what, rx in SECRET_LOOKING.items() for m in rx.finditer(text)]
    data = yaml.safe_load(text)
    for n, item in enumerate(data.get("interactions") or []):
        for side in ("request", "response"):
            names = {str(h).lower() for h in (item[side].get("headers") or {})}
            problems += [f"interaction {n} {side} has a {h} header" for h in sorted(names & CREDENTIAL_HEADERS)]
    return problems


CASSETTE_FILES = sorted(FIXTURES.rglob("*.yaml"))


def test_there_are_cassettes_to_check() -> None:
    assert {p.name for p in CASSETTE_FILES} >= {"contacts_full_load.yaml", "companies_incremental.yaml",
                                                "calls_incremental.yaml", "contacts_batch_upsert.yaml"}


@pytest.mark.parametrize("path", CASSETTE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_no_cassette_holds_a_credential(path: Path) -> None:
    assert secret_problems(path) == []


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.name)
def test_each_hubspot_cassette_says_it_was_composed_and_from_what(path: Path) -> None:
    header = "".join(line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                     if line.startswith("#"))
    assert "NOT recorded live" in header and "developers.hubspot.com" in header and "PublicApiSpecs/" in header
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["interactions"]


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(yaml.safe_dump({"version": 1, "interactions": [{
        "request": {"method": "GET", "uri": "https://api.hubapi.com/x?hapikey=abc", "body": None,
                    "headers": {"Authorization": [f"Bearer {TOKEN}"]}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "{}"}}}]}))
    found = " ".join(secret_problems(leaky))
    for what in ("an Authorization header", "a bearer token", "a HubSpot private-app token", "a secret-named key",
                 "request has a authorization header"):
        assert what in found


def test_a_cassette_recorded_with_this_config_keeps_no_credential(tmp_path: Path) -> None:
    """Recording (against the sandbox on loopback, never a real portal) drops the Authorization header."""
    store = SandboxStore(contacts=120)
    with SandboxServer(store, token=TOKEN) as server, \
            hubspot_vcr(tmp_path, record_mode="all").use_cassette("recorded.yaml"):
        pages = read(connector(base_url=server.url), "contacts")
    assert len({r.external_id for p in pages for r in p.records}) == 120
    recorded = tmp_path / "recorded.yaml"
    assert len(yaml.safe_load(recorded.read_text())["interactions"]) == 5
    assert secret_problems(recorded) == []
