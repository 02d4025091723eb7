"""The shared activity ingest (hub.activities) on SQLite and PostgreSQL: participants resolved to
contacts, accounts and opportunities; idempotent appends; versions that never roll back; deletes as
versions; participants matched later by relink; YAML-mapped activities."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from hub.activities import relink, timeline
from hub.mapping import StreamMapping, parse_mapping
from hub.sdk.activity import ActivityEvent, Participant
from hub.sdk.types import RawRecord
from hub.writer import PageWriter
from state.bulk import Batch
from state.db import ensure_schema, make_engine
from state.schema import (
    accounts,
    activities,
    activity_participants,
    activity_versions,
    contacts,
    external_links,
    opportunities,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    ensure_schema(engine)
    with engine.begin() as c:
        c.execute(insert(accounts), [{"id": "acc1", "name": "Acme"}, {"id": "acc2", "name": "Globex"}])
        c.execute(insert(contacts), [
            {"id": "c-ann", "email": "ann@acme.com", "phone": "+14155550100", "account_id": "acc1",
             "created_at": NOW},
            {"id": "c-bob", "email": "bob@globex.com", "phone": None, "account_id": "acc2", "created_at": NOW},
        ])
        c.execute(insert(opportunities), [
            {"id": "opp1", "account_id": "acc1", "name": "Acme renewal", "stage": "negotiation"},
            {"id": "opp0", "account_id": "acc1", "name": "Acme 2025", "stage": "closedwon"},
            {"id": "opp2", "account_id": "acc2", "name": "a", "stage": "qualify"},
            {"id": "opp3", "account_id": "acc2", "name": "b", "stage": "proposal"},
        ])
        c.execute(insert(external_links), [{"connector": "stripe_main", "entity": "account", "external_id": "cus_1",
                                            "entity_id": "acc2", "linked_at": NOW}])
    yield engine
    engine.dispose()


def write(engine: Engine, source: str, events: list[ActivityEvent], deleted: list[str] | None = None,
          mapping: StreamMapping | None = None, internal: tuple[str, ...] = ("@ourco.com", "+1 (212) 555-0199")) -> Any:
    writer = PageWriter(source, "messages", mapping or StreamMapping("messages", "activity", []), internal=internal)
    prepared = writer.prepare([RawRecord(e.external_id, e.updated_at, {"raw": True}, activity=e) for e in events])
    with engine.begin() as c:
        batch = Batch(c)
        out = writer.write(batch, prepared, deleted or [], NOW, None)
        batch.flush()
    return out


def rows(engine: Engine, table: Any, **where: Any) -> list[dict[str, Any]]:
    q = select(table)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with engine.connect() as c:
        return [dict(r) for r in c.execute(q).mappings()]


def email(ext: str, frm: str, to: list[str], **kw: Any) -> ActivityEvent:
    parts = [Participant("from", email=frm)] + [Participant("to", email=t) for t in to]
    return ActivityEvent("email", ext, kw.pop("occurred_at", "2026-11-20T10:00:00Z"), parts, subject="Hello", **kw)


def test_participants_resolve_to_contact_account_and_the_only_open_opportunity(db: Engine) -> None:
    out = write(db, "gmail_main", [
        # inbound from a contact, display-name form, mixed case; cc an internal colleague
        ActivityEvent("email", "m1", "2026-11-20T10:00:00Z", [
            Participant("from", email='"Ann Lee" <Ann@ACME.com>'), Participant("to", email="me@ourco.com"),
            Participant("cc", email="someone@elsewhere.org")], direction="inbound", status="received"),
        # outbound from an internal user to Bob (Globex has two open opportunities: none picked)
        email("m2", "Me <me@ourco.com>", ["bob@globex.com"], direction="outbound"),
    ])
    assert out.written == 2 and not out.failures
    m1 = rows(db, activities, external_id="m1")[0]
    assert (m1["contact_id"], m1["account_id"], m1["opportunity_id"]) == ("c-ann", "acc1", "opp1")
    assert m1["actor_id"] == "me@ourco.com" and m1["version"] == 1  # the internal user it involves and m1["status"] == "received"
    m2 = rows(db, activities, external_id="m2")[0]
    assert (m2["contact_id"], m2["account_id"], m2["opportunity_id"]) == ("c-bob", "acc2", None)
    assert m2["actor_id"] == "me@ourco.com"
    parts = {(p["role"], p["email"]): p for p in rows(db, activity_participants, activity_id=m1["id"])}
    assert parts[("from", "ann@acme.com")]["contact_id"] == "c-ann"
    assert parts[("from", "ann@acme.com")]["name"] == "Ann Lee"
    assert parts[("to", "me@ourco.com")]["internal"] is True and parts[("to", "me@ourco.com")]["contact_id"] is None
    # an unknown participant is kept, unmatched, for a later contact
    assert parts[("cc", "someone@elsewhere.org")]["contact_id"] is None


@pytest.mark.parametrize("written", ["(415) 555-0100", "415.555.0100", "+1 415 555 0100", "001 415 555 0100",
                                     "tel:+1-415-555-0100"])
def test_a_phone_number_written_any_way_finds_the_contact(db: Engine, written: str) -> None:
    call = ActivityEvent("call", "CA1", "2026-11-20T10:00:00Z", [
        Participant("caller", phone=written), Participant("agent", phone="212-555-0199", user_id="u7")],
        direction="inbound", duration_s=61, status="completed")
    write(db, "twilio_main", [call])
    row = rows(db, activities, external_id="CA1")[0]
    assert row["contact_id"] == "c-ann" and row["account_id"] == "acc1"
    assert row["actor_id"] == "u7"  # the internal number names the agent, never a contact
    assert row["payload"]["duration_s"] == 61


def test_redelivery_is_a_no_op_and_a_change_is_a_new_version(db: Engine) -> None:
    ev = email("m1", "ann@acme.com", ["me@ourco.com"])
    write(db, "gmail_main", [ev])
    again = write(db, "gmail_main", [email("m1", "ann@acme.com", ["me@ourco.com"])])
    assert again.written == 0 and again.succeeded_ids == ["m1"]
    assert len(rows(db, activities)) == 1 and len(rows(db, activity_versions)) == 1


def test_a_meeting_moved_twice_arriving_out_of_order_ends_at_its_latest_state(db: Engine) -> None:
    def meeting(start: str, updated: str, status: str = "scheduled") -> ActivityEvent:
        return ActivityEvent("meeting", "ev1", start, [Participant("organizer", email="me@ourco.com"),
                                                        Participant("attendee", email="ann@acme.com",
                                                                    response="accepted")],
                             ended_at=start.replace("T10", "T11"), status=status, updated_at=updated)
    write(db, "gcal", [meeting("2026-12-01T10:00:00Z", "2026-11-01T00:00:00Z")])
    write(db, "gcal", [meeting("2026-12-03T10:00:00Z", "2026-11-03T00:00:00Z")])  # the latest move
    late = write(db, "gcal", [meeting("2026-12-02T10:00:00Z", "2026-11-02T00:00:00Z")])  # arrives last
    assert late.written == 0
    row = rows(db, activities, external_id="ev1")[0]
    assert row["occurred_at"] == datetime(2026, 12, 3, 10, tzinfo=UTC) and row["version"] == 2
    versions = sorted((v["version"], v["applied"]) for v in rows(db, activity_versions, external_id="ev1"))
    assert versions == [(1, True), (2, True), (3, False)]  # history kept, nothing rolled back
    # cancelled later: a new version with the status
    write(db, "gcal", [meeting("2026-12-03T10:00:00Z", "2026-11-04T00:00:00Z", status="cancelled")])
    row = rows(db, activities, external_id="ev1")[0]
    assert row["status"] == "cancelled" and row["version"] == 4
    assert len(rows(db, activity_participants, activity_id=row["id"])) == 2  # replaced, not doubled


def test_a_vendor_delete_is_a_version_not_an_erasure(db: Engine) -> None:
    write(db, "gmail_main", [email("m1", "ann@acme.com", ["me@ourco.com"])])
    out = write(db, "gmail_main", [], deleted=["m1", "never-seen"])
    assert out.deleted == 2
    row = rows(db, activities, external_id="m1")[0]
    assert row["status"] == "deleted" and row["version"] == 2 and row["contact_id"] == "c-ann"
    assert len(rows(db, activity_versions, external_id="m1")) == 2


def test_unmatched_participants_are_relinked_when_the_contact_appears(db: Engine) -> None:
    write(db, "gmail_main", [email("m9", "carol@initech.com", ["me@ourco.com"], occurred_at="2026-11-21T09:00:00Z")])
    assert rows(db, activities, external_id="m9")[0]["contact_id"] is None
    with db.begin() as c:
        c.execute(insert(contacts), [{"id": "c-carol", "email": "Carol@Initech.com", "account_id": "acc2",
                                      "created_at": NOW}])
        assert relink(c) == 1
        assert relink(c) == 0  # nothing left to attach
    row = rows(db, activities, external_id="m9")[0]
    assert (row["contact_id"], row["account_id"]) == ("c-carol", "acc2")
    with db.connect() as c:
        assert [a["subject"] for a in timeline(c, "c-carol")] == ["Hello"]


def test_relink_gives_the_only_open_opportunity_as_a_match_at_ingest_does(db: Engine) -> None:
    write(db, "gmail_main", [
        email("m1", "carol@initech.com", ["me@ourco.com"]),  # carol: Acme, whose only open opportunity is opp1
        email("m2", "dan@hooli.com", ["me@ourco.com"]),  # dan: Globex, two open opportunities
        email("m3", "Carol <carol@initech.com>", ["me@ourco.com"]),  # one with its opportunity named already
        email("m4", "erin@piedpiper.com", ["me@ourco.com"]),  # erin: a contact with no account yet
    ])
    with db.begin() as c:
        c.execute(activities.update().where(activities.c.external_id == "m3").values(opportunity_id="opp2"))
        c.execute(insert(contacts), [
            {"id": "c-carol", "email": "carol@initech.com", "account_id": "acc1", "created_at": NOW},
            {"id": "c-dan", "email": "dan@hooli.com", "account_id": "acc2", "created_at": NOW},
            {"id": "c-erin", "email": "erin@piedpiper.com", "account_id": None, "created_at": NOW}])
        assert relink(c) == 4
    got = {r["external_id"]: (r["contact_id"], r["account_id"], r["opportunity_id"]) for r in rows(db, activities)}
    assert got == {"m1": ("c-carol", "acc1", "opp1"), "m2": ("c-dan", "acc2", None),
                   "m3": ("c-carol", "acc1", "opp2"), "m4": ("c-erin", None, None)}
    # erin's company appears later: the next relink gives her activity its account and opportunity
    write(db, "gmail_main", [email("m5", "frank@piedpiper.com", ["me@ourco.com"])])
    with db.begin() as c:
        c.execute(insert(accounts), [{"id": "acc3", "name": "Pied Piper"}])
        c.execute(insert(opportunities), [{"id": "opp4", "account_id": "acc3", "name": "Pilot", "stage": "discovery"}])
        c.execute(contacts.update().where(contacts.c.id == "c-erin").values(account_id="acc3"))
        c.execute(insert(contacts), [{"id": "c-frank", "email": "frank@piedpiper.com", "account_id": "acc3",
                                      "created_at": NOW}])
        assert relink(c) == 1
    got = {r["external_id"]: (r["contact_id"], r["account_id"], r["opportunity_id"]) for r in rows(db, activities)}
    assert got["m4"] == ("c-erin", "acc3", "opp4") and got["m5"] == ("c-frank", "acc3", "opp4")
    assert got["m1"] == ("c-carol", "acc1", "opp1") and got["m3"] == ("c-carol", "acc1", "opp2")


def test_refs_attach_by_the_connectors_own_ids_and_bad_events_are_queued(db: Engine) -> None:
    payment = ActivityEvent("payment", "ch_1", "2026-11-19T08:00:00Z", refs={"account": "cus_1"},
                            status="succeeded", details={"amount": "19.99", "currency": "USD"})
    bad = ActivityEvent("payment", "ch_2", "not a time", refs={"account": "cus_1"})
    out = write(db, "stripe_main", [payment, bad])
    row = rows(db, activities, external_id="ch_1")[0]
    assert row["account_id"] == "acc2" and row["payload"]["details"]["amount"] == "19.99"
    assert [f["external_id"] for f in out.failures] == ["ch_2"]
    assert "not a timestamp" in out.failures[0]["reason"]
    # the queued payload replays without the connector (retry queue)
    writer = PageWriter("stripe_main", "charges", StreamMapping("charges", "activity", []))
    again = writer.prepare([RawRecord("ch_2", None, out.failures[0]["payload"])])
    # still unusable: queued again with the same payload and reason
    assert again.failures == out.failures and not again.events
    fixed = {**out.failures[0]["payload"]}
    fixed["__activity__"] = {**fixed["__activity__"], "occurred_at": "2026-11-19T09:00:00Z"}
    (n,) = writer.prepare([RawRecord("ch_2", None, fixed)]).events
    assert n.event.external_id == "ch_2" and n.event.refs == {"account": "cus_1"}


def test_a_value_longer_than_its_column_fails_the_event_not_the_page(db: Engine) -> None:
    ok = email("m-ok", "ann@example.com", ["bob@example.com"])
    long_status = email("m-status", "ann@example.com", ["bob@example.com"], status="s" * 40)
    long_user = email("m-user", "ann@example.com", ["bob@example.com"])
    long_user.participants.append(Participant(role="cc", user_id="u" * 200))
    out = write(db, "gmail_main", [ok, long_status, long_user])
    assert [r["external_id"] for r in rows(db, activities)] == ["m-ok"]
    reasons = {f["external_id"]: f["reason"] for f in out.failures}
    assert reasons == {"m-status": "activity rejected: status is 40 characters long; an activity's status holds at most 32",
                       "m-user": "activity rejected: participant user_id is 200 characters long; at most 128 are kept"}


def test_yaml_mapped_activities_take_the_same_path(db: Engine) -> None:
    mapping = parse_mapping("""
streams:
  calls:
    target: activity
    fields:
      type: {path: kind, transform: {default: call}}
      occurred_at: {path: started, transform: timestamp}
      subject: title
      from_phone: number
    references:
      account_id: {path: customer, entity: account}
""", "mappings/x.yaml")["calls"]
    writer = PageWriter("stripe_main", "calls", mapping)
    prepared = writer.prepare([RawRecord("k1", None, {"started": 1763625600, "title": "Intro",
                                                      "number": "+1 415 555 0100", "customer": "cus_1"})])
    with db.begin() as c:
        batch = Batch(c)
        writer.write(batch, prepared, [], NOW, None)
        batch.flush()
    row = rows(db, activities, external_id="k1")[0]
    assert (row["type"], row["subject"], row["contact_id"], row["account_id"]) == ("call", "Intro", "c-ann", "acc2")


def test_cli_relink_and_timeline(db: Engine, db_url: str, tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from hub.cli import app as cli_app

    write(db, "gmail_main", [email("m1", "ann@acme.com", ["me@ourco.com"], occurred_at="2026-11-20T10:00:00Z"),
                             email("m0", "dave@unknown.io", ["ann@acme.com"], occurred_at="2026-11-19T10:00:00Z")])
    write(db, "twilio_main", [ActivityEvent("call", "CA1", "2026-11-21T10:00:00Z",
                                            [Participant("callee", phone="415 555 0100")], direction="outbound")])
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps({"database": db_url, "connectors": {}}))
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "activities", "timeline", "ANN@acme.com", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["contact_id"] == "c-ann"
    # time order; m0 is Dave's email with Ann in `to`: on her timeline as a participant
    assert [(a["type"], a["source"]) for a in doc["activities"]] == [
        ("email", "gmail_main"), ("email", "gmail_main"), ("call", "twilio_main")]
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "activities", "relink"])
    assert res.exit_code == 0 and "0 participant(s)" in res.stdout
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "activities", "timeline", "nobody@x.io"])
    assert res.exit_code == 1 and "no contact" in res.output


def test_an_item_deleted_then_seen_again_comes_back(db: Engine) -> None:
    # a message moved between two folders a connector reads: removed from one, live in the other;
    # the vendor's clock may run ahead of the hub's, which must not keep the delete from applying
    future = "2099-01-01T00:00:00Z"
    write(db, "m365", [email("m1", "ann@acme.com", ["me@ourco.com"], updated_at=future)])
    write(db, "m365", [], deleted=["m1"])
    assert rows(db, activities, external_id="m1")[0]["status"] == "deleted"
    write(db, "m365", [email("m1", "ann@acme.com", ["me@ourco.com"], updated_at=future)])
    row = rows(db, activities, external_id="m1")[0]
    assert row["status"] is None and row["version"] == 3


def test_a_status_only_event_restates_the_stored_activity_with_its_status(db: Engine) -> None:
    meeting = ActivityEvent("meeting", "ev1", "2026-12-01T10:00:00Z", [
        Participant("organizer", email="me@ourco.com"), Participant("attendee", email="ann@acme.com", response="accepted")],
        ended_at="2026-12-01T11:00:00Z", duration_s=3600, direction="outbound", subject="Demo", status="scheduled",
        url="https://cal.example/ev1", updated_at="2026-11-01T00:00:00Z", details={"calendar": "me@ourco.com"})
    write(db, "gcal", [meeting])
    before = rows(db, activities, external_id="ev1")[0]
    # what Google says of a cancelled (or deleted) event: its id and status; reported as a delete too
    off = ActivityEvent("meeting", "ev1", "", status="cancelled")
    unknown = ActivityEvent("meeting", "never-seen", "", status="cancelled")
    out = write(db, "gcal", [off, unknown], deleted=["ev1", "never-seen"])
    assert not out.failures and sorted(out.succeeded_ids) == ["ev1", "never-seen"]
    row = rows(db, activities, external_id="ev1")[0]
    assert row["status"] == "cancelled" and row["version"] == 2
    kept = ("occurred_at", "ended_at", "direction", "subject", "url", "contact_id", "account_id", "opportunity_id",
            "actor_id", "payload")
    assert {k: row[k] for k in kept} == {k: before[k] for k in kept}
    assert sorted((p["role"], p["email"], p["response"]) for p in rows(db, activity_participants, activity_id=row["id"])) \
        == [("attendee", "ann@acme.com", "accepted"), ("organizer", "me@ourco.com", None)]
    assert not rows(db, activities, external_id="never-seen"), "an item the hub never held is left alone"
    version = max(rows(db, activity_versions, external_id="ev1"), key=lambda v: v["version"])
    assert version["data"]["status"] == "cancelled" and len(version["data"]["participants"]) == 2
    again = write(db, "gcal", [off], deleted=["ev1"])
    assert again.written == 0 and len(rows(db, activity_versions, external_id="ev1")) == 2
    assert rows(db, activities, external_id="ev1")[0]["status"] == "cancelled"


def test_the_same_mail_through_another_connector_is_not_added_twice(db: Engine) -> None:
    # a mailbox moved from Gmail to Microsoft 365: the same mail, other ids, same Message-ID
    gmail = email("mbox:17f0a", "ann@acme.com", ["me@ourco.com"], details={"message_id": "<CAx1@mail.acme.com>"})
    graph = email("AAMkAD-immutable", "Ann <ann@acme.com>", ["me@ourco.com"],
                  details={"message_id": "<cax1@mail.acme.com>"})
    write(db, "gmail_main", [gmail])
    out = write(db, "m365_main", [graph])
    assert out.written == 0
    assert len(rows(db, activities)) == 1 and len(rows(db, activity_participants)) == 2
