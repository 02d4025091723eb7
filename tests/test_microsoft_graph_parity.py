"""The same mail read through Gmail and through Microsoft Graph gives the same activity event
(issue 7: switching a mailbox from Gmail to Microsoft 365 is a change of config). Both vendors'
sandboxes hold one inbound and one outbound mail with one Message-ID; both connectors read them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.microsoft_graph.sandbox import GraphStore, SandboxServer
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import ActivityEvent, Connector

gmail_sandbox = pytest.importorskip("connectors.gmail.sandbox")

ANN, TOKEN = "ann@acme.test", "ya29.parity-test-token"
DANA, CAROL = ("dana@customer.example", "Dana Swope"), ("carol@customer.example", "Carol Ng")
WHEN = datetime(2026, 11, 20, 9, 30, 0, tzinfo=UTC)
MAILS = [  # (folder/label, sender, to, cc, subject, when, Message-ID)
    ("inbox", DANA, [(ANN, "Ann Lee")], [CAROL], "Renewal quote", WHEN, "<renewal-1@customer.example>"),
    ("sentitems", (ANN, "Ann Lee"), [DANA], [], "Re: Renewal quote", WHEN + timedelta(hours=2),
     "<reply-2@acme.test>"),
]


def _fmt(p: tuple[str, str]) -> str:
    return f"{p[1]} <{p[0]}>"


@pytest.fixture
def both() -> Iterator[tuple[Connector, Connector]]:
    gstore = gmail_sandbox.GmailStore({ANN: TOKEN})
    mstore = GraphStore([ANN], messages=0, events=0)
    for folder, sender, to, cc, subject, when, mid in MAILS:
        headers = [("From", _fmt(sender)), ("To", ", ".join(map(_fmt, to))), *([("Cc", ", ".join(map(_fmt, cc)))]
                                                                              if cc else []),
                   ("Subject", subject), ("Date", when.strftime("%a, %d %b %Y %H:%M:%S +0000")), ("Message-ID", mid)]
        gstore.add_message(ANN, headers=headers, at_ms=int(when.timestamp() * 1000),
                           labels=["INBOX"] if folder == "inbox" else ["SENT"])
        mstore.deliver(ANN, folder, sender=sender, to=to, cc=cc, subject=subject, sent_at=when, message_id=mid)
    with gmail_sandbox.GmailSandbox(gstore) as gs, SandboxServer(mstore, token=TOKEN) as ms:
        cfg = parse_config({"connectors": {
            "mail": {"kind": "gmail", "base_url": gs.url, "mailboxes": [{"address": ANN, "access_token": TOKEN}]},
            "m365": {"kind": "microsoft_graph", "base_url": ms.url, "auth": {"token": TOKEN}, "mailboxes": [ANN]},
        }})
        factory = ConnectorFactory(cfg, sleep=lambda _s: None)
        g, m = factory.build("mail"), factory.build("m365")
        try:
            yield g, m
        finally:
            g.close()
            m.close()


def by_message_id(conn: Connector) -> dict[str, ActivityEvent]:
    out = {}
    for page in conn.read("messages", None):
        for rec in page.records:
            assert rec.activity is not None
            out[rec.activity.details["message_id"]] = rec.activity
    return out


def comparable(ev: ActivityEvent) -> dict[str, Any]:
    return {"type": ev.type, "subject": ev.subject, "direction": ev.direction, "status": ev.status,
            "occurred_at": datetime.fromisoformat(ev.occurred_at.replace("Z", "+00:00")),
            "participants": [(p.role, p.email.lower() if p.email else None, p.name) for p in ev.participants],
            "message_id": ev.details["message_id"], "body_excerpt": ev.body_excerpt}


def test_the_same_mail_gives_the_same_event_through_gmail_and_graph(both: tuple[Connector, Connector]) -> None:
    gmail, graph = (by_message_id(c) for c in both)
    assert set(gmail) == set(graph) == {m[-1] for m in MAILS}
    for mid in gmail:
        assert comparable(gmail[mid]) == comparable(graph[mid]), mid
