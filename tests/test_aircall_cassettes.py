"""Aircall cassettes (fixtures/aircall) replayed through the connector with vcrpy, `record_mode="none"`,
and Aircall's documented webhook sample through the parser and `webhook_pages`. Composed from Aircall's
documented samples (see fixtures/aircall/README.md), not recorded."""

from __future__ import annotations

import json
import re

from connectors.aircall.connector import AircallConnector
from hub.webhooks.schemes import parse_aircall
from tests.test_twilio_cassettes import (
    FIXTURES,
    build,
    credential_problems,
    fixture_files,
    read_all,
    replayer,
)

#: the `token` of Aircall's documented `call.created` sample (API reference, as vendor-apis.md
#: section 8 reproduces it): the docs mask it with X's, so it is a placeholder, not a secret
DOCUMENTED_WEBHOOK_TOKEN = "cebcaac65XXXXXXXXXx"


def test_aircall_first_read_replays_to_two_calls() -> None:
    conn = build("aircall", auth={"api_id": "placeholder-id", "api_token": "placeholder-token"},
                 start_date="2024-11-26", settle_seconds=0)
    assert isinstance(conn, AircallConnector)
    conn.clock = lambda: 1732626000.0
    with replayer("aircall").use_cassette("calls_first_read.yaml") as cassette:
        assert "accepted" in conn.check()
        pages = read_all(conn)
    assert cassette.all_played and cassette.play_count == 2
    done, missed = (r.activity for p in pages for r in p.records)
    assert done is not None and missed is not None
    assert (done.external_id, done.status, done.direction, done.duration_s) == ("123", "completed", "outbound", 120)
    assert [(p.role, p.phone or p.user_id) for p in done.participants] == [
        ("callee", "+1 800-123-4567"), ("caller", "+33 1 76 36 06 95"), ("agent", "123")]
    assert done.details["recording_url"] == "https://assets.aircall.io/calls/123/recording"
    assert (missed.status, missed.details["missed_call_reason"]) == ("missed", "agents_did_not_answer")
    assert pages[-1].next_cursor == {"since": 1732624000, "seen": ["124"], "open": {}}


def test_aircall_documented_webhook_sample_becomes_a_ringing_call() -> None:
    raw = (FIXTURES / "aircall" / "webhook_call_created.json").read_bytes()
    [event] = parse_aircall(raw, "application/json", "")
    stored = json.loads(event.raw)
    assert "token" not in stored
    conn = build("aircall", auth={"api_id": "placeholder-id", "api_token": "placeholder-token"})
    [(stream, page)] = conn.webhook_pages(stored)
    [rec] = page.records
    assert stream == "calls" and rec.activity is not None
    act = rec.activity
    assert (act.external_id, act.status, act.direction, act.ended_at) == ("123", "ringing", "outbound", None)
    assert act.updated_at == "2024-11-26T12:08:16Z"  # the event's timestamp dates this version
    assert [(p.role, p.phone or p.user_id) for p in act.participants] == [("callee", "+1 800-123-4567"),
                                                                          ("agent", "123")]


def test_no_secret_in_any_aircall_cassette_or_payload() -> None:
    files = fixture_files("aircall")
    assert {p.name for p in files} >= {"calls_first_read.yaml", "webhook_call_created.json"}
    for path in files:
        assert credential_problems(path, "placeholder-id:placeholder-token", "placeholder-token") == [], path.name
        text = path.read_text(encoding="utf-8")
        # a webhook's `token` authenticates it: only the documentation's masked one may be here
        tokens = re.findall(r'"token"\s*:\s*"([^"]*)"', text)
        assert set(tokens) <= {DOCUMENTED_WEBHOOK_TOKEN}, f"{path.name}: a webhook token {tokens}"
    sample = json.loads((FIXTURES / "aircall" / "webhook_call_created.json").read_bytes())
    assert sample["token"] == DOCUMENTED_WEBHOOK_TOKEN and "XXXXXXXXX" in sample["token"]
