"""Salesforce cassettes (fixtures/salesforce/*.yaml) replayed through the connector with vcrpy.

The cassettes were composed from Salesforce's documented examples, not recorded (see
fixtures/salesforce/README.md). Replay is `record_mode="none"`: a request no interaction matches
fails the test, and nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import vcr
from vcr.request import Request as VcrRequest

from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
from hub.mapping import load_mappings
from hub.sdk import ConnectorContext, CursorExpired, Page

CASSETTES = Path(__file__).resolve().parents[1] / "fixtures" / "salesforce"
INSTANCE = "https://mydomainname.my.salesforce.com"
TOKEN = "00DDn0000000001!AQ4AQcassette.replay.token"
MAPPINGS = load_mappings(None)


def _fields_and_rest(q: str) -> tuple[set[str], str]:
    head, _, rest = q.partition(" FROM ")
    return {f.strip() for f in head.removeprefix("SELECT ").split(",")}, rest


def _query(uri: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True))


def salesforce_request(r1: VcrRequest, r2: VcrRequest) -> None:
    """Match what the connector decides: method, URL, parameters, SOQL from FROM on, and bodies.
    A SOQL field list must hold the cassette's fields; more are fine (they follow the mapping)."""
    assert r1.method == r2.method
    assert (r1.scheme, r1.host, r1.port, r1.path) == (r2.scheme, r2.host, r2.port, r2.path)
    q1, q2 = _query(r1.uri), _query(r2.uri)
    soql1, soql2 = q1.pop("q", None), q2.pop("q", None)
    assert q1 == q2, "query parameters differ"
    if soql1 is not None or soql2 is not None:
        assert soql1 is not None and soql2 is not None
        (f1, rest1), (f2, rest2) = _fields_and_rest(soql1), _fields_and_rest(soql2)
        assert rest1 == rest2, "SOQL differs after FROM"
        assert f1 >= f2 or f2 >= f1, "SOQL field lists disagree"
    b1 = json.loads(r1.body) if r1.body else None
    b2 = json.loads(r2.body) if r2.body else None
    assert b1 == b2, "bodies differ"


def salesforce_vcr() -> vcr.VCR:
    cassettes = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["salesforce"],
                        filter_headers=["authorization"])
    cassettes.register_matcher("salesforce", salesforce_request)
    return cassettes


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay should need no retry (asked to sleep {seconds}s)")


def connector(clock: Callable[[], datetime] | None = None, hints: dict[str, list[str]] | None = None
              ) -> SalesforceConnector:
    cfg = SalesforceConfig.model_validate({
        "kind": "salesforce", "auth": {"access_token": TOKEN, "instance_url": INSTANCE},
        "custom_objects": ["Merchandise__c"], "external_id_fields": {"Account": "customExtIdField__c"}})
    return SalesforceConnector(cfg, ConnectorContext(name="sf", sleep=no_retry, field_hints=hints or {}),
                               clock=clock)


def read(conn: SalesforceConnector, stream: str, cursor: dict[str, Any] | None = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def test_contact_first_load_replays_to_mapped_records_and_a_keyset_cursor() -> None:
    hints = {s: m.paths for s, m in MAPPINGS.for_connector("sf", "salesforce").items()}
    with salesforce_vcr().use_cassette("contact_first_load.yaml") as cassette:
        pages = read(connector(hints=hints), "Contact")
    assert cassette.all_played and cassette.play_count == 2 == sum(p.requests for p in pages)
    records = [r for p in pages for r in p.records]
    assert [r.external_id for r in records] == ["003D000000QV9n2IAD", "003D000000QV9n3IAD", "003D000000QV9n4IAD"]
    mapping = MAPPINGS.stream("sf", "salesforce", "Contact")
    jack = mapping.map(records[2].data)
    assert {k: jack.values[k] for k in ("email", "first_name", "last_name", "phone", "title")} == {
        "email": "jack@burlington.example", "first_name": "Jack", "last_name": "Rogers", "phone": "+13362227000",
        "title": "VP, Facilities"}
    assert jack.values["updated_at"] == datetime(2013, 5, 7, 22, 30, tzinfo=UTC)
    assert jack.refs == {"account_id": "001D000000IRFmaIAH"}
    assert mapping.map(records[1].data).refs == {}
    # the keyset of the last record, and deletes from the vendor's clock at the first batch
    assert pages[-1].next_cursor == {"ts": "2013-05-07T22:30:00.000+0000", "id": "003D000000QV9n4IAD",
                                     "deleted_since": "2013-05-07T23:00:05+00:00"}
    assert pages[0].next_cursor is not None and pages[0].next_cursor["id"] == "003D000000QV9n3IAD"


def test_merchandise_incremental_reads_the_documented_deletes_then_changes() -> None:
    cursor = {"ts": "2013-05-03T10:00:00.000+0000", "id": "a00D0000008oLi8IAE",
              "deleted_since": "2013-05-05T00:00:00+00:00"}
    with salesforce_vcr().use_cassette("merchandise_incremental_deletes.yaml") as cassette:
        pages = read(connector(clock=lambda: datetime(2013, 5, 10, tzinfo=UTC)), "Merchandise__c", cursor)
    assert cassette.all_played and cassette.play_count == 2
    assert [p.deleted for p in pages] == [["a00D0000008pQRAIA2"], []]
    assert [r.external_id for r in pages[1].records] == ["a00D0000008oLi9IAE"]
    # the next window starts at latestDateCovered, as the docs ask
    assert pages[-1].next_cursor == {"ts": "2013-05-09T08:15:00.000+0000", "id": "a00D0000008oLi9IAE",
                                     "deleted_since": "2013-05-08T21:20:00+00:00"}


def test_a_start_before_earliest_date_available_expires_the_cursor() -> None:
    cursor = {"ts": "2013-05-01T00:00:00.000+0000", "id": "a00D0000008oLi8IAE",
              "deleted_since": "2013-05-01T00:00:00+00:00"}
    with salesforce_vcr().use_cassette("merchandise_window_passed.yaml") as cassette, \
            pytest.raises(CursorExpired, match="2013-05-03T15:57:00"):
        read(connector(clock=lambda: datetime(2013, 5, 10, tzinfo=UTC)), "Merchandise__c", cursor)
    assert cassette.all_played


def test_account_upsert_replays_to_per_record_results() -> None:
    changes = [{"customExtIdField__c": "11999", "Name": "California Wheat Corporation", "Type": "New Customer"},
               {"customExtIdField__c": "12000", "Type": "Prospect"},
               {"customExtIdField__c": "12001", "Name": "Edge Communications"}]
    with salesforce_vcr().use_cassette("account_upsert_mixed.yaml") as cassette:
        conn = connector()
        results = conn.write("Account", changes)
        conn.close()
    assert cassette.all_played
    assert [(r.ok, r.created, r.external_id, r.key) for r in results] == [
        (True, True, "00190000001pPvHAAU", "11999"), (False, False, None, "12000"),
        (True, False, "001D000000IRFmaIAH", "12001")]
    assert results[1].error == "REQUIRED_FIELD_MISSING: Required fields are missing: [Name] (Name)"


def test_no_salesforce_cassette_holds_a_credential() -> None:
    secretish = re.compile(r"(?i)authorization|bearer\s+\S|access_token|refresh_token|client_secret|00D\w{12}!")
    for path in CASSETTES.glob("*.yaml"):
        # the header comments may say "Authorization"; the data may not
        data = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines()
                          if not line.lstrip().startswith("#"))
        assert not secretish.search(data), f"{path.name} looks like it holds a credential"
