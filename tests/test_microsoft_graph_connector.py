"""The Microsoft Graph connector against the Graph sandbox on loopback: mail and meeting
activities, @removed items, expired delta tokens, calendar windows, auth, throttling, privacy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.microsoft_graph.sandbox import GraphStore, SandboxServer
from hub.config import ConfigError, parse_config
from hub.registry import ConnectorFactory
from hub.sdk import AuthError, Connector, Cursor, CursorExpired, FatalError, Page
from hub.sdk.oauth import MemoryTokenStore

TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6InRlc3RzIn0.graph-connector-tests"
ANN, BOB = "ann@contoso.test", "bob@contoso.test"


@pytest.fixture
def store() -> GraphStore:
    return GraphStore([ANN, BOB], messages=6, events=6)


@pytest.fixture
def server(store: GraphStore) -> Iterator[SandboxServer]:
    with SandboxServer(store, token=TOKEN, clients={"app-1": "s3cr3t-client-value"},
                       refresh_tokens=["0.AR8A-delegated-refresh-1"]) as sb:
        yield sb


def window(store: GraphStore, days: int = 20, shift: int = 0) -> dict[str, Any]:
    return {"calendar_start": (store.base_time - timedelta(days=days - shift)).isoformat(),
            "calendar_end": (store.base_time + timedelta(days=days + shift)).isoformat()}


def connector(server: SandboxServer, *, sleeps: list[float] | None = None, **options: Any) -> Connector:
    block = {"kind": "microsoft_graph", "base_url": server.url, "auth": {"token": TOKEN},
             "mailboxes": [ANN, BOB], "page_size": 3, **options}
    cfg = parse_config({"connectors": {"m365": block}})
    return ConnectorFactory(cfg, sleep=(sleeps.append if sleeps is not None else lambda _s: None)).build("m365")


def read(conn: Connector, stream: str, cursor: Cursor | None = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def records(pages: list[Page]) -> dict[str, Any]:
    out = {}
    for p in pages:
        for r in p.records:
            assert r.external_id not in out, f"{r.external_id} read twice"
            out[r.external_id] = r
    return out


def events_of(pages: list[Page]) -> dict[str, Any]:
    return {ext: r.activity for ext, r in records(pages).items()}


# -- mail -------------------------------------------------------------------------------------------

def test_mail_becomes_email_activities_with_metadata_only(store: GraphStore, server: SandboxServer) -> None:
    got = records(read(connector(server, mailboxes=[ANN]), "messages"))
    assert set(got) == set(store.ids(ANN, "inbox")) | set(store.ids(ANN, "sentitems"))
    mb = store.mailbox(ANN)
    for ext, rec in got.items():
        folder = "inbox" if ext in mb.items[mb.folders["inbox"]] else "sentitems"
        src = mb.items[mb.folders[folder]][ext].current
        ev = rec.activity
        assert ev.type == "email" and ev.external_id == ext
        assert (ev.direction, ev.status) == (("inbound", "received") if folder == "inbox" else ("outbound", "sent"))
        assert ev.occurred_at == src["sentDateTime"] and ev.subject == src["subject"]
        assert ev.details["message_id"] == src["internetMessageId"] and ev.details["folder"] == folder
        assert ev.url == src["webLink"] and ev.updated_at == src["lastModifiedDateTime"]
        sender = src["from"]["emailAddress"]
        assert (ev.participants[0].role, ev.participants[0].email, ev.participants[0].name) == \
            ("from", sender["address"], sender["name"])
        assert [p.email for p in ev.participants if p.role == "to"] == \
            [r["emailAddress"]["address"] for r in src["toRecipients"]]
        assert ev.body_excerpt is None
        # $select asked for metadata only: no body, no preview, nothing unasked (isRead)
        assert not {"body", "bodyPreview", "isRead", "uniqueBody"} & set(rec.data)


def test_body_excerpt_only_when_the_privacy_setting_allows_it(store: GraphStore, server: SandboxServer) -> None:
    got = records(read(connector(server, mailboxes=[ANN], body_excerpt_chars=5), "messages"))
    rec = next(iter(got.values()))
    assert rec.activity.body_excerpt == "Hello"
    assert "bodyPreview" in rec.data and "body" not in rec.data  # the preview, never the body


def test_the_same_mail_in_two_mailboxes_is_the_same_event(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server), "messages")
    copies = store.send(ANN, ["carol@example.com"], "Proposal", cc=[BOB])
    got = events_of(read(connector(server), "messages", pages[-1].next_cursor))
    sent, received = got[copies[ANN]], got[copies[BOB]]
    # both copies say what the team did, whichever mailbox is read first: Ann (of the team) sent it
    assert (sent.direction, sent.status, received.direction, received.status) == \
        ("outbound", "sent", "outbound", "sent")
    for key in ("type", "occurred_at", "subject", "direction", "status"):
        assert getattr(sent, key) == getattr(received, key)
    assert sent.details["message_id"] == received.details["message_id"]
    assert [(p.role, p.email) for p in sent.participants] == [(p.role, p.email) for p in received.participants] == \
        [("from", ANN), ("to", "carol@example.com"), ("cc", BOB)]


def test_mail_among_the_team_only_is_internal(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server), "messages")
    copies = store.send(ANN, [BOB], "Lunch?")
    got = events_of(read(connector(server), "messages", pages[-1].next_cursor))
    assert {got[i].direction for i in copies.values()} == {"internal"}


def test_removed_messages_are_reported_as_deletes(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server), "messages")
    gone = store.delete(BOB, store.ids(BOB, "inbox")[:2])
    later = read(connector(server), "messages", pages[-1].next_cursor)
    assert sorted(d for p in later for d in p.deleted) == sorted(gone)
    assert not {r.external_id for p in later for r in p.records} & set(gone)


def test_a_message_removed_as_changed_is_no_delete_and_one_removed_as_deleted_is(store: GraphStore,
                                                                                   server: SandboxServer) -> None:
    """`changed` is documented as soft-deleted or restorable: the mail stays a fact on the timeline."""
    pages = read(connector(server), "messages")
    soft, hard = store.ids(BOB, "inbox")[:2]
    store.delete(BOB, [soft], reason="changed")
    store.delete(BOB, [hard])
    later = read(connector(server), "messages", pages[-1].next_cursor)
    assert [d for p in later for d in p.deleted] == [hard]
    assert not [r for p in later for r in p.records]


def test_an_event_removed_as_changed_is_still_a_delete(store: GraphStore, server: SandboxServer) -> None:
    opts = window(store)
    pages = read(connector(server, **opts), "events")
    ext = store.ids(ANN, "calendar")[0]
    store.delete(ANN, [ext], reason="changed")  # a meeting taken off the calendar is off, however
    later = read(connector(server, **opts), "events", pages[-1].next_cursor)
    assert [d for p in later for d in p.deleted] == [ext]


def test_a_replayed_older_version_within_a_page_never_wins(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server, mailboxes=[ANN]), "messages")
    ext = store.ids(ANN, "inbox")[0]
    store.update(ANN, ext, {"subject": "v2"})
    store.update(ANN, ext, {"subject": "v3"})
    store.replay(ANN, ext, version=-2)  # Graph sends v2 again after v3, in the same response
    got = events_of(read(connector(server, mailboxes=[ANN]), "messages", pages[-1].next_cursor))
    assert got[ext].subject == "v3"


# -- expired delta tokens ---------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["resyncRequired", "syncStateNotFound", "syncStateInvalid"])
def test_a_rejected_delta_token_raises_cursor_expired_and_a_full_read_loses_nothing(
        store: GraphStore, server: SandboxServer, code: str) -> None:
    pages = read(connector(server), "messages")
    store.delete(ANN, store.ids(ANN, "inbox")[:1])
    store.send("dana@example.com", [BOB], "New while expired")
    store.expire_tokens(BOB, code=code)
    with pytest.raises(CursorExpired, match="full resync"):
        read(connector(server), "messages", pages[-1].next_cursor)
    truth = {i for mb in (ANN, BOB) for f in ("inbox", "sentitems") for i in store.ids(mb, f)}
    assert set(records(read(connector(server), "messages"))) == truth  # records() fails on a double


def test_an_expired_skip_token_mid_round_raises_cursor_expired(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server), "events")
    assert len(pages) > 2
    store.expire_tokens(ANN)
    with pytest.raises(CursorExpired):
        read(connector(server), "events", pages[0].next_cursor)


# -- calendar ---------------------------------------------------------------------------------------

def test_meetings_become_activities_with_attendees_and_their_answers(store: GraphStore,
                                                                      server: SandboxServer) -> None:
    ext = store.ids(ANN, "calendar")[0]
    cur = store.mailbox(ANN).items["calendar"][ext].current
    guest = cur["attendees"][1]["emailAddress"]["address"]
    store.respond(ANN, ext, guest, "accepted")
    room = {"type": "resource", "status": {"response": "accepted", "time": "2026-01-01T00:00:00Z"},
            "emailAddress": {"name": "Room 1", "address": "room1@contoso.test"}}
    store.update(ANN, ext, {"attendees": [*store.mailbox(ANN).items["calendar"][ext].current["attendees"], room]})
    ev = events_of(read(connector(server, mailboxes=[ANN], **window(store)), "events"))[ext]
    assert ev.type == "meeting" and ev.status == "scheduled" and ev.direction == "outbound"
    start = datetime.fromisoformat(cur["start"]["dateTime"][:19]).replace(tzinfo=UTC)
    assert ev.occurred_at == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ev.duration_s == (datetime.fromisoformat(cur["end"]["dateTime"][:19]).replace(tzinfo=UTC)
                             - start).total_seconds()
    roles = [(p.role, p.email, p.response) for p in ev.participants]
    assert roles[0] == ("organizer", ANN, "organizer")
    assert ("attendee", guest, "accepted") in roles
    assert all(p.email != "room1@contoso.test" for p in ev.participants)  # rooms are not people
    assert ev.details["ical_uid"] == cur["iCalUId"] and "body" not in records(
        read(connector(server, mailboxes=[ANN], **window(store)), "events"))[ext].data


def test_a_cancelled_meeting_arrives_as_status_cancelled(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server, **window(store)), "events")
    ext = store.ids(BOB, "calendar")[1]
    store.cancel_event(BOB, ext)
    got = events_of(read(connector(server, **window(store)), "events", pages[-1].next_cursor))
    assert set(got) == {ext} and got[ext].status == "cancelled"


def test_a_meeting_moved_twice_yields_versions_ordered_by_vendor_time(store: GraphStore,
                                                                        server: SandboxServer) -> None:
    conn_opts = window(store)
    pages = read(connector(server, **conn_opts), "events")
    ext = store.ids(ANN, "calendar")[2]
    first = store.base_time + timedelta(days=3, hours=1)
    store.move_event(ANN, ext, first)
    after_first = read(connector(server, **conn_opts), "events", pages[-1].next_cursor)
    v2 = events_of(after_first)[ext]
    store.move_event(ANN, ext, first + timedelta(days=1))
    v3 = events_of(read(connector(server, **conn_opts), "events", after_first[-1].next_cursor))[ext]
    assert v2.occurred_at == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert v3.occurred_at == (first + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert v3.updated_at is not None and v2.updated_at is not None and v3.updated_at > v2.updated_at


def test_events_outside_the_window_are_not_read_and_one_moved_out_is_removed(store: GraphStore,
                                                                             server: SandboxServer) -> None:
    far = store.add_event(ANN, subject="Next year", start=store.base_time + timedelta(days=200))
    opts = window(store)
    pages = read(connector(server, **opts), "events")
    assert far not in records(pages)
    ext = store.ids(BOB, "calendar")[0]
    store.move_event(BOB, ext, store.base_time + timedelta(days=90))
    later = read(connector(server, **opts), "events", pages[-1].next_cursor)
    assert ext in {d for p in later for d in p.deleted} and ext not in records(later)


def test_a_new_window_starts_a_new_round(store: GraphStore, server: SandboxServer) -> None:
    pages = read(connector(server, mailboxes=[ANN], **window(store, days=2)), "events")
    narrow = set(records(pages))
    wide = records(read(connector(server, mailboxes=[ANN], **window(store, days=20)), "events",
                        pages[-1].next_cursor))
    assert set(wide) == set(store.ids(ANN, "calendar")) and narrow < set(wide)


def test_a_rolling_window_is_started_again_once_it_has_slid(store: GraphStore, server: SandboxServer) -> None:
    conn = connector(server, mailboxes=[ANN], calendar_past_days=30, calendar_future_days=30,
                     calendar_rewindow_days=7)
    pages = read(conn, "events")
    cursor = pages[-1].next_cursor
    assert cursor is not None
    assert read(connector(server, mailboxes=[ANN], calendar_past_days=30, calendar_future_days=30,
                          calendar_rewindow_days=7), "events", cursor)[0].records == []
    old = {k: [(datetime.fromisoformat(v[0].replace("Z", "+00:00")) - timedelta(days=8)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), v[1]] for k, v in cursor["window"].items()}
    again = read(connector(server, mailboxes=[ANN], calendar_past_days=30, calendar_future_days=30,
                           calendar_rewindow_days=7), "events", {**cursor, "window": old})
    assert set(records(again)) == set(store.ids(ANN, "calendar"))  # a new round reads the window again


# -- cost, safety, auth, throttling ----------------------------------------------------------------

def test_an_incremental_read_with_nothing_new_costs_one_request_per_folder(store: GraphStore,
                                                                          server: SandboxServer) -> None:
    pages = read(connector(server, **window(store)), "messages")
    cal = read(connector(server, **window(store)), "events")
    store.requests.clear()
    assert not records(read(connector(server, **window(store)), "messages", pages[-1].next_cursor))
    assert not records(read(connector(server, **window(store)), "events", cal[-1].next_cursor))
    assert sum(store.requests.values()) == 2 * 2 + 2  # 2 mailboxes x (Inbox, Sent Items) + 2 calendars


def test_a_stored_link_to_another_host_is_refused_before_any_request(store: GraphStore,
                                                                      server: SandboxServer) -> None:
    pages = read(connector(server, mailboxes=[ANN]), "messages")
    cursor = pages[-1].next_cursor
    assert cursor is not None
    key = next(iter(cursor["delta"]))
    bad = {**cursor, "delta": {**cursor["delta"], key: "https://attacker.example/v1.0/me/messages/delta"}}
    store.requests.clear()
    with pytest.raises(FatalError, match="outside"):
        read(connector(server, mailboxes=[ANN]), "messages", bad)
    assert not store.requests


def test_a_rejected_token_is_an_auth_error_that_names_no_secret(server: SandboxServer) -> None:
    block = {"kind": "microsoft_graph", "base_url": server.url, "auth": {"token": "wrong-token-123456"},
             "mailboxes": [ANN]}
    conn = ConnectorFactory(parse_config({"connectors": {"m": block}}), sleep=lambda _s: None).build("m")
    with pytest.raises(AuthError) as err:
        read(conn, "messages")
    assert "401" in str(err.value) and "wrong-token-123456" not in str(err.value)


def test_client_credentials_through_the_identity_platform(store: GraphStore, server: SandboxServer) -> None:
    def oauth(secret: str) -> dict[str, Any]:
        return {"grant": "client_credentials", "client_id": "app-1", "client_secret": secret,
                "token_url": f"{server.url}/contoso.test/oauth2/v2.0/token",
                "scopes": ["https://graph.microsoft.com/.default"]}
    got = records(read(connector(server, mailboxes=[ANN], auth=oauth("s3cr3t-client-value")), "messages"))
    assert set(got) == set(store.ids(ANN, "inbox")) | set(store.ids(ANN, "sentitems"))
    assert store.requests["POST /oauth2/v2.0/token"] == 1  # one token for every page
    with pytest.raises(AuthError) as err:
        read(connector(server, mailboxes=[ANN], auth=oauth("wrong-secret-value")), "messages")
    assert "invalid_client" in str(err.value) and "wrong-secret-value" not in str(err.value)


def test_429_and_503_honour_retry_after(store: GraphStore, server: SandboxServer) -> None:
    sleeps: list[float] = []
    store.fail_next(1, 429, retry_after=7)
    store.fail_next(1, 503, retry_after=2)
    got = records(read(connector(server, sleeps=sleeps, mailboxes=[ANN]), "messages"))
    assert set(got) == set(store.ids(ANN, "inbox")) | set(store.ids(ANN, "sentitems"))
    assert sleeps[:2] == [7.0, 2.0]


def test_config_mistakes_are_named_with_the_fix(server: SandboxServer) -> None:
    with pytest.raises(ConfigError) as err:
        connector(server, mailboxes=["me"])
    assert "address" in str(err.value) and "Fix" in str(err.value)
    with pytest.raises(ConfigError, match="page_size"):
        connector(server, page_size=5000)
    conn = connector(server, mailboxes=[{"id": "me", "address": ANN}])
    assert "ann@contoso.test" in conn.check()


def test_a_cursor_it_did_not_write_is_a_clear_error(server: SandboxServer) -> None:
    with pytest.raises(FatalError, match=r"stored cursor's 'delta'.*--full"):
        read(connector(server), "messages", {"delta": ["not", "a", "map"]})


def test_delegated_oauth_renews_an_expired_token_and_stores_the_rotated_refresh_token(
        store: GraphStore, server: SandboxServer) -> None:
    tokens = MemoryTokenStore()
    tokens.save("m365", "", {"access_token": "expired-access-token", "token_type": "Bearer",
                             "refresh_token": "0.AR8A-delegated-refresh-1", "expires_at": 1})
    block = {"kind": "microsoft_graph", "base_url": server.url, "mailboxes": [{"id": "me", "address": ANN}],
             "auth": {"grant": "authorization_code", "client_id": "app-1",
                      "authorize_url": f"{server.url}/contoso.test/oauth2/v2.0/authorize",
                      "token_url": f"{server.url}/contoso.test/oauth2/v2.0/token",
                      "scopes": ["offline_access", "Mail.Read", "Calendars.Read"]}}
    cfg = parse_config({"connectors": {"m365": block}})
    conn = ConnectorFactory(cfg, sleep=lambda _s: None, token_store=tokens).build("m365")
    got = records(read(conn, "messages"))
    assert set(got) == set(store.ids(ANN, "inbox")) | set(store.ids(ANN, "sentitems"))
    stored = tokens.load("m365", "")
    assert stored is not None and stored.token["refresh_token"] not in ("0.AR8A-delegated-refresh-1", None)
    assert stored.token["access_token"] != "expired-access-token"
