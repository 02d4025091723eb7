"""Stripe cassettes (fixtures/stripe/*.yaml) replayed through the connector with vcrpy.

The cassettes were composed from Stripe's documented examples, not recorded (see
fixtures/stripe/README.md). Replay is `record_mode="none"`: a request that no interaction
matches fails the test, and nothing reaches the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import vcr
from vcr.request import Request as VcrRequest

from connectors.stripe.connector import StripeConnector
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import CursorExpired, Page

CASSETTES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
KEY = "rk_test_cassette_replay_only_000000"
PROBE_DATE = 1686182400  # the Date header of the full load's probe


def _query(uri: str) -> list[tuple[str, str]]:
    return sorted(parse_qsl(urlsplit(uri).query, keep_blank_values=True))


def _form(body: Any) -> list[tuple[str, str]]:
    if not body:
        return []
    text = body.decode() if isinstance(body, bytes) else str(body)
    return sorted(parse_qsl(text, keep_blank_values=True))


def _header(r: VcrRequest, name: str) -> str | None:
    for k, v in r.headers.items():
        if k.lower() == name.lower():
            return v[0] if isinstance(v, list) else str(v)
    return None


def stripe_request(r1: VcrRequest, r2: VcrRequest) -> None:
    assert r1.method == r2.method
    assert (r1.scheme, r1.host, r1.port, r1.path) == (r2.scheme, r2.host, r2.port, r2.path)
    assert _query(r1.uri) == _query(r2.uri), "query parameters differ"
    assert _form(r1.body) == _form(r2.body), "form bodies differ"
    for name in ("Idempotency-Key", "Stripe-Version"):
        wanted = _header(r2, name)
        if wanted is not None:
            assert _header(r1, name) == wanted, f"{name} differs"


def cassettes() -> vcr.VCR:
    v = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["stripe"],
                filter_headers=["authorization"])  # an interaction plays once by default
    v.register_matcher("stripe", stripe_request)
    return v


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay should need no retry (asked to sleep {seconds}s)")


def connector(**options: Any) -> StripeConnector:
    cfg = parse_config({"connectors": {"stripe_main": {"kind": "stripe", "auth": {"api_key": KEY}, **options}}})
    conn = ConnectorFactory(cfg, sleep=no_retry).build("stripe_main")
    assert isinstance(conn, StripeConnector)
    conn.clock = lambda: PROBE_DATE + 3600  # the cassettes' time, so their events are inside the retention
    return conn


def read(conn: StripeConnector, stream: str, cursor: Any = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def test_full_load_pages_by_starting_after_then_walks_the_events() -> None:
    with cassettes().use_cassette("customers_full_load.yaml") as cass:
        pages = read(connector(page_size=1), "customers")
        assert cass.all_played
    assert [[r.external_id for r in p.records] for p in pages] == [["cus_NffrFeUfNV2Hib"], ["cus_4QFJOjw2pOmAGJ"]]
    assert pages[0].requests == 2  # the probe is counted with the first page
    assert pages[0].records[0].updated_at == "2023-06-08T00:00:00Z"  # as of the probe, by Stripe's clock
    assert pages[-1].next_cursor == {"phase": "events", "event": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
                                     "created": 1686089970, "since": PROBE_DATE}


def test_events_walk_forward_report_deletes_and_expire() -> None:
    start = {"phase": "events", "event": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "created": 1686089970,
             "since": PROBE_DATE}
    with cassettes().use_cassette("customers_events.yaml") as cass:
        pages = read(connector(page_size=1), "customers", start)
        assert len(pages) == 2
        rename = pages[0].records[0]
        assert (rename.external_id, rename.data["email"], rename.updated_at) == (
            "cus_NffrFeUfNV2Hib", "jenny.rosen@example.com", "2023-06-06T22:20:00Z")
        assert pages[1].deleted == ["cus_NffrFeUfNV2Hib"] and not pages[1].records
        assert pages[-1].next_cursor is not None and pages[-1].next_cursor["event"] == "evt_1NG8Fr2eZvKYlo2CDelete01"
        with pytest.raises(CursorExpired, match="no longer has"):
            read(connector(page_size=1), "customers", pages[-1].next_cursor)
        assert cass.all_played


def test_customer_update_is_form_encoded_with_the_idempotency_key() -> None:
    with cassettes().use_cassette("customer_update.yaml") as cass:
        conn = connector()
        try:
            [res] = conn.write("customers", [{"external_id": "cus_NffrFeUfNV2Hib", "metadata": {"order_id": 6735},
                                              "key": "crmhub-change-6735"}])
        finally:
            conn.close()
        assert cass.all_played
    assert (res.ok, res.key, res.external_id) == (True, "crmhub-change-6735", "cus_NffrFeUfNV2Hib")


def test_an_upgrade_event_becomes_a_subscription_change_activity() -> None:
    start = {"phase": "events", "event": "evt_1MowQVLkdIwHu7ixCreated", "created": 1679609767,
             "since": 1679609767}
    conn = connector()
    conn.clock = lambda: 1680000000 + 60
    with cassettes().use_cassette("subscriptions_events.yaml") as cass:
        pages = read(conn, "subscription_changes", start)
        assert cass.all_played
    [rec] = [r for p in pages for r in p.records]
    act = rec.activity
    assert act is not None and rec.external_id == act.external_id == "evt_1MpUpgLkdIwHu7ixUpgrade1"
    assert (act.type, act.details["change"], act.details["mrr_before"], act.details["mrr"]) == (
        "subscription_change", "upgrade", "10.00", "25.00")
    assert act.refs == {"account": "cus_Na6dX7aXxi11N4"} and act.subject == "Subscription upgraded: Pro"
