"""Twilio cassettes (fixtures/twilio) replayed through the connectors
with vcrpy, `record_mode="none"`: a request no interaction matches fails, nothing reaches the
network. The cassettes were composed from Twilio's documented examples (see fixtures/twilio/README.md
and each cassette's header), not recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vcr

from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import Connector, Page

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TWILIO_AC = "AC" + "X" * 32


def replayer(folder: str) -> vcr.VCR:
    return vcr.VCR(cassette_library_dir=str(FIXTURES / folder), record_mode="none",
                   match_on=["method", "scheme", "host", "port", "path", "query"], filter_headers=["authorization"])


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay should need no retry (asked to sleep {seconds}s)")


def build(kind: str, **block: Any) -> Connector:
    cfg = parse_config({"connectors": {"x": {"kind": kind, **block}}})
    return ConnectorFactory(cfg, sleep=no_retry).build("x")


def read_all(conn: Connector) -> list[Page]:
    try:
        return list(conn.read("calls", None))
    finally:
        conn.close()


def test_twilio_first_scan_replays_to_two_calls_and_a_cursor() -> None:
    conn = build("twilio", auth={"account_sid": TWILIO_AC, "auth_token": "placeholder-token"},
                 start_date="2010-08-31")
    with replayer("twilio").use_cassette("calls_first_scan.yaml") as cassette:
        pages = read_all(conn)
    assert cassette.all_played and cassette.play_count == 2 == len(pages)
    first, second = (r.activity for p in pages for r in p.records)
    assert first is not None and second is not None
    assert (second.external_id, second.status, second.direction, second.duration_s) == (
        "CA" + "X" * 32, "completed", "inbound", 15)
    assert (second.occurred_at, second.ended_at, second.updated_at) == (
        "2010-08-31T20:36:29Z", "2010-08-31T20:36:44Z", "2010-08-31T20:36:44Z")
    assert [(p.role, p.phone) for p in second.participants] == [("caller", "+15017122661"), ("callee", "+14155551212")]
    assert second.details["recordings_url"] == (
        f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_AC}/Calls/{'CA' + 'X' * 32}/Recordings.json")
    assert (first.status, first.direction) == ("missed", "outbound")
    final = pages[-1].next_cursor
    assert final is not None and (final["gen"], final["day"]) == (1, "2010-08-31") and len(final["seen"]) == 2
