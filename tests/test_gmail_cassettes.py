"""Gmail cassettes (fixtures/gmail/*.yaml) replayed through the connector with vcrpy.

Composed from Google's documented shapes, not recorded (fixtures/gmail/README.md). Replay is
`record_mode="none"`: a request no interaction matches fails the test; nothing reaches the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import vcr
from vcr.request import Request as VcrRequest

from connectors.gmail import GmailConnector
from connectors.gmail.connector import GmailConfig
from hub.sdk import ConnectorContext, CursorExpired, Page

CASSETTES = Path(__file__).resolve().parents[1] / "fixtures" / "gmail"
ANN = "ann@example.com"
TOKEN = "ya29.a0-cassette-token-not-a-real-one"


def _query(uri: str) -> list[tuple[str, str]]:
    out = []
    for k, v in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
        if k == "q":  # q=after:<epoch> follows the clock: check the term, not its value
            assert v.startswith("after:"), f"the look-back is an after: term, got {v!r}"
            v = "after:"
        out.append((k, v))
    return sorted(out)


def google_request(r1: VcrRequest, r2: VcrRequest) -> None:
    assert (r1.method, r1.scheme, r1.host, r1.path) == (r2.method, r2.scheme, r2.host, r2.path)
    assert _query(r1.uri) == _query(r2.uri), "query parameters differ"


def cassettes() -> vcr.VCR:
    v = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["google"],
                filter_headers=["authorization"])
    v.register_matcher("google", google_request)
    return v


def read(cursor: dict[str, Any] | None = None) -> list[Page]:
    cfg = GmailConfig.model_validate({"kind": "gmail", "fetch_concurrency": 1,
                                      "mailboxes": [{"address": ANN, "access_token": TOKEN}]})
    conn = GmailConnector(cfg, ConnectorContext(name="gm", sleep=lambda _s: None))
    try:
        return list(conn.read("messages", cursor))
    finally:
        conn.close()


def test_first_sync_then_history_then_nothing_new() -> None:
    with cassettes().use_cassette("first_sync_then_history.yaml") as cassette:
        pages = read()
        assert cassette.play_count == 6
        later = read(pages[-1].next_cursor)
        assert cassette.all_played
    listing, history = pages
    assert listing.requests == 4 and history.requests == 2  # profile + list + 2 gets; history + 1 get
    events = {r.external_id: r.activity for p in pages for r in p.records}
    inbound, outbound, reply = (events[f"{ANN}:{i}"] for i in ("18f1a2b3c4d5e6f7", "18f1a2b3c4d5e6f0", "18f1a2b3c4d5e6f8"))
    assert inbound is not None and outbound is not None and reply is not None
    assert (inbound.direction, inbound.status, inbound.subject) == ("inbound", "received", "Pricing question")
    assert inbound.occurred_at == "2026-06-02T09:00:00.000Z"  # internalDate 1780390800000
    assert [(p.role, p.email, p.name) for p in inbound.participants] == [
        ("from", "Ann.Lee@Customer.example", "Lee, Ann"), ("to", ANN, "Ann"),
        ("cc", "kim@customer.example", None), ("cc", "bob@example.com", "Bob")]
    assert inbound.details["message_id"] == "<CAF1a2b3c4@mail.customer.example>"
    assert (outbound.direction, outbound.status) == ("outbound", "sent")
    assert reply.details["thread_id"] == "18f1a2b3c4d5e6f7" and reply.direction == "outbound"
    assert history.deleted == [f"{ANN}:18f1a2b3c4d5e6f0"]
    assert all("snippet" not in r.data for p in pages for r in p.records), "metadata only by default"
    assert pages[-1].next_cursor == {"mailboxes": {ANN: {"phase": "history", "history_id": "1234570"}}}
    assert [(p.requests, p.records, p.deleted) for p in later] == [(1, [], [])]
    assert later[0].next_cursor == pages[-1].next_cursor


def test_expired_history_id_raises_cursor_expired() -> None:
    with cassettes().use_cassette("history_expired.yaml"), pytest.raises(CursorExpired, match="notFound"):
        read({"mailboxes": {ANN: {"phase": "history", "history_id": "1000"}}})


def test_no_secret_in_any_cassette() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text()
        assert "ya29." not in text and "Bearer" not in text and "authorization:" not in text.lower()
