"""Identity resolution, per-field source of truth, provenance and `crmhub explain`, end to end.

The same people arrive from two HubSpot portals (two sandboxes generated from one seed, so
record i has the same email in both), with conflicting fields set on either side, under the
rules of issue 4:

    contact.phone: {rule: owner, system: hubspot_a}
    contact.lifecycle_stage: {rule: priority, systems: [hubspot_b, hubspot_a]}
    contact.title: {rule: fill_empty}
    contact.*: {rule: most_recent}

Then each person must exist once with two links, every field must follow its rule, and
`crmhub explain` must say why. Both backends.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.cli import app as cli_app
from hub.config import parse_config
from hub.identity import norm_domain, norm_email, norm_name, norm_phone
from hub.mapping import parse_mapping
from hub.ownership import Merger, parse_rules
from hub.sdk.types import RawRecord
from hub.transforms import phone as phone_transform
from hub.writer import PageWriter
from state import repos
from state.bulk import Batch
from state.db import make_engine
from state.schema import accounts, change_log, contacts, external_links, retry_queue

ISSUE_RULES = {
    "contact.phone": {"rule": "owner", "system": "hubspot_a"},
    "contact.lifecycle_stage": {"rule": "priority", "systems": ["hubspot_b", "hubspot_a"]},
    "contact.title": {"rule": "fill_empty"},
    "contact.*": {"rule": "most_recent"},
}
N = 150
TOKEN = "sandbox-token"


def _config(db_url: str, servers: dict[str, SandboxServer], rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "database": db_url,
        "connectors": {name: {"kind": "hubspot", "base_url": s.url, "auth": {"token": TOKEN}, "search_lag_ms": 0,
                              "requests_per_second": 100_000, "streams": ["companies", "contacts"]}
                       for name, s in servers.items()},
        "ownership": rules,
    }


@contextmanager
def _two_portals(db_url: str, tmp_path: Path, rules: dict[str, Any], n: int = N
                 ) -> Iterator[tuple[Hub, SandboxStore, SandboxStore, Path]]:
    a_store, b_store = SandboxStore(contacts=n, deals=0, seed=7), SandboxStore(contacts=n, deals=0, seed=7)
    with SandboxServer(a_store, token=TOKEN) as a, SandboxServer(b_store, token=TOKEN) as b:
        doc = _config(db_url, {"hubspot_a": a, "hubspot_b": b}, rules)
        path = tmp_path / "crmhub.yaml"
        path.write_text(json.dumps(doc))
        hub = Hub(parse_config(doc, str(path), str(path))).ready()
        try:
            yield hub, a_store, b_store, path
        finally:
            hub.close()


def _sync(hub: Hub, target: str, *, full: bool = False) -> None:
    results = hub.engine.run(target, full=full)
    assert results and all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]


def _contact_by_email(hub: Hub, email: str) -> dict[str, Any]:
    with hub.db.connect() as c:
        rows = [dict(r) for r in c.execute(select(contacts).where(contacts.c.email == email)).mappings()]
    assert len(rows) == 1, f"{email}: {len(rows)} contacts"
    return rows[0]


def _cid(i: int) -> str:
    return str(1001 + i)


def _first(store: SandboxStore, pred: Any, taken: set[int]) -> int:
    i = next(i for i in range(N) if i not in taken and pred(store.raw("contacts", i)))
    taken.add(i)
    return i


def test_two_portals_merge_field_by_field_and_explain_says_why(db_url: str, tmp_path: Path) -> None:
    with _two_portals(db_url, tmp_path, ISSUE_RULES) as (hub, a_store, b_store, cfg_path):
        # one seed, one dataset: the same index is the same person (email) in both portals
        assert [a_store.raw("contacts", i)["email"] for i in range(N)] == \
               [b_store.raw("contacts", i)["email"] for i in range(N)]
        taken: set[int] = set()
        i_phone_b = _first(a_store, lambda r: r["phone"] is not None, taken)
        i_phone_a = _first(a_store, lambda r: r["phone"] is not None, taken)
        i_stage_b = _first(a_store, lambda r: r["lifecyclestage"] != "customer", taken)
        i_stage_a = _first(a_store, lambda r: r["lifecyclestage"] != "evangelist", taken)
        i_stage_empty = _first(a_store, lambda r: True, taken)
        i_title_empty = _first(a_store, lambda r: r["jobtitle"] is None, taken)
        i_title_full = _first(a_store, lambda r: r["jobtitle"] not in (None, "CTO"), taken)
        i_first = _first(a_store, lambda r: True, taken)
        orig = {i: a_store.raw("contacts", i) for i in taken}

        # portal B's edits (stamped after every generated record)
        b_store.modify("contacts", ids=[_cid(i_phone_b)], properties={"phone": "+1 555 000 1111", "firstname": "Bea"})
        b_store.modify("contacts", ids=[_cid(i_phone_a)], properties={"phone": "+1 555 000 2222"})
        b_store.modify("contacts", ids=[_cid(i_stage_b)], properties={"lifecyclestage": "customer"})
        b_store.modify("contacts", ids=[_cid(i_stage_empty)], properties={"lifecyclestage": ""})
        b_store.modify("contacts", ids=[_cid(i_title_empty), _cid(i_title_full)], properties={"jobtitle": "CTO"})
        b_store.modify("contacts", ids=[_cid(i_first)], properties={"firstname": "Bob"})
        # portal A's edits, later than all of B's
        a_store.advance_clock(3_600_000)
        a_store.modify("contacts", ids=[_cid(i_phone_a)], properties={"phone": "+1 555 999 0000"})
        a_store.modify("contacts", ids=[_cid(i_stage_a)], properties={"lifecyclestage": "evangelist"})
        a_store.modify("contacts", ids=[_cid(i_first)], properties={"firstname": "Alex"})

        _sync(hub, "hubspot_a")
        _sync(hub, "hubspot_b")

        with hub.db.connect() as c:
            assert c.execute(select(func.count()).select_from(contacts)).scalar_one() == N
            assert c.execute(select(func.count()).select_from(accounts)).scalar_one() == N // 10
            links = Counter((eid, conn) for eid, conn in c.execute(
                select(external_links.c.entity_id, external_links.c.connector)
                .where(external_links.c.entity == "contact", external_links.c.deleted_at.is_(None))))
        per_entity = Counter(eid for eid, _conn in links)
        assert len(per_entity) == N and set(per_entity.values()) == {2}, "each person once, linked from both"
        assert {conn for _eid, conn in links} == {"hubspot_a", "hubspot_b"}

        def row(i: int) -> dict[str, Any]:
            return _contact_by_email(hub, orig[i]["email"])

        # owner: only hubspot_a writes the phone
        assert row(i_phone_b)["phone"] == phone_transform(orig[i_phone_b]["phone"])
        assert row(i_phone_a)["phone"] == "+15559990000"
        # most_recent: B's record is newer for i_phone_b, A's for i_first
        assert row(i_phone_b)["first_name"] == "Bea"
        assert row(i_first)["first_name"] == "Alex"
        # priority [hubspot_b, hubspot_a]: B's value wins even where A changed later; an empty one never does
        assert row(i_stage_b)["lifecycle_stage"] == "customer"
        assert row(i_stage_a)["lifecycle_stage"] == orig[i_stage_a]["lifecyclestage"]
        assert row(i_stage_empty)["lifecycle_stage"] == orig[i_stage_empty]["lifecyclestage"]
        # fill_empty: B only fills what A left empty
        assert row(i_title_empty)["title"] == "CTO"
        assert row(i_title_full)["title"] == orig[i_title_full]["jobtitle"]
        # provenance says who set what, from which record, under which rule
        p = row(i_phone_b)["provenance"]
        assert p["phone"][0] == "hubspot_a" and p["phone"][2] == "owner" and p["phone"][4] == _cid(i_phone_b)
        assert p["first_name"][0] == "hubspot_b" and p["first_name"][2] == "most_recent"
        assert row(i_stage_b)["provenance"]["lifecycle_stage"][:3:2] == ["hubspot_b", "priority"]
        assert row(i_title_empty)["provenance"]["title"][:3:2] == ["hubspot_b", "fill_empty"]

        # `crmhub explain contact <email> phone --json`
        email = orig[i_phone_b]["email"]
        res = CliRunner().invoke(cli_app, ["--config", str(cfg_path), "explain", "contact", email, "phone", "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        a_phone = phone_transform(orig[i_phone_b]["phone"])
        assert set(doc) == {"entity", "id", "fields"}
        assert doc["entity"] == "contact" and doc["id"] == row(i_phone_b)["id"]
        assert list(doc["fields"]) == ["phone"]
        phone = doc["fields"]["phone"]
        assert set(phone) == {"value", "source", "rule", "history"}
        assert (phone["value"], phone["source"], phone["rule"]) == (a_phone, "hubspot_a", "owner")
        assert [(h["op"], h["source"], h["accepted"], h["value"], h["rule"], h["reason"]) for h in phone["history"]] == [
            ("create", "hubspot_a", True, a_phone, None, "new record: first value, from hubspot_a"),
            ("link", "hubspot_b", False, "+15550001111", "owner", "hubspot_a owns this field"),
        ]
        assert phone["history"][0]["seq"] < phone["history"][1]["seq"]
        # every field, and the text form
        res = CliRunner().invoke(cli_app, ["--config", str(cfg_path), "explain", "contact", email, "--json"])
        full = json.loads(res.stdout)
        first = full["fields"]["first_name"]
        assert (first["value"], first["source"], first["rule"]) == ("Bea", "hubspot_b", "most_recent")
        assert [(h["source"], h["accepted"], h["value"]) for h in first["history"]] == [
            ("hubspot_a", True, orig[i_phone_b]["firstname"]), ("hubspot_b", True, "Bea")]
        assert first["history"][1]["reason"] == "newer than the stored change from hubspot_a"
        assert "custom" not in full["fields"] and "provenance" not in full["fields"]
        res = CliRunner().invoke(cli_app, ["--config", str(cfg_path), "explain", "contact", email, "phone"])
        assert res.exit_code == 0, res.output
        text = " ".join(res.stdout.split())  # as wrapped for any terminal width
        assert "set by hubspot_a (record " in text and "under owner" in text
        assert "refused link hubspot_b: +15550001111 (rule: owner) — hubspot_a owns this field" in text
        res = CliRunner().invoke(cli_app, ["--config", str(cfg_path), "explain", "contact", "nobody@example.com"])
        assert res.exit_code == 1

        # the match and the refusals are in B's change-log row for the record (one row, not one per field)
        with hub.db.connect() as c:
            b_rows = [r for (r,) in c.execute(select(change_log.c.fields).where(
                change_log.c.entity_id == row(i_title_full)["id"], change_log.c.source == "hubspot_b"))]
        assert len(b_rows) == 1
        assert b_rows[0]["_match"] == f"matched on email {orig[i_title_full]['email']!r}"
        assert b_rows[0]["_rejected"]["title"] == {"value": "CTO", "rule": "fill_empty",
                                                   "reason": "the field already has a value"}

        # re-reading both portals from scratch decides nothing new and logs nothing twice
        with hub.db.connect() as c:
            logged = c.execute(select(func.count()).select_from(change_log)).scalar_one()
        _sync(hub, "hubspot_a", full=True)
        _sync(hub, "hubspot_b", full=True)
        with hub.db.connect() as c:
            assert c.execute(select(func.count()).select_from(change_log)).scalar_one() == logged
        assert row(i_phone_b)["first_name"] == "Bea" and row(i_first)["first_name"] == "Alex"

        # deletes: the minor source's delete unlinks; the last link's delete archives
        i_del = next(i for i in range(N) if i not in taken)
        b_store.archive("contacts", [_cid(i_del)])
        _sync(hub, "hubspot_b")
        victim = _contact_by_email(hub, a_store.raw("contacts", i_del)["email"])
        assert victim["archived_at"] is None
        a_store.archive("contacts", [_cid(i_del)])
        _sync(hub, "hubspot_a")
        assert _contact_by_email(hub, victim["email"])["archived_at"] is not None
        with hub.db.connect() as c:
            ops = [(op, src, f.get("_reason")) for op, src, f in c.execute(
                select(change_log.c.op, change_log.c.source, change_log.c.fields)
                .where(change_log.c.entity_id == victim["id"], change_log.c.op.in_(["unlink", "archive"]))
                .order_by(change_log.c.seq))]
        assert ops == [("unlink", "hubspot_b", "still linked to hubspot_a: unlinked only"),
                       ("archive", "hubspot_a", "no other system is linked")]


def test_only_the_primary_system_archives(db_url: str, tmp_path: Path) -> None:
    rules = {"contact.*": {"rule": "priority", "systems": ["hubspot_a", "hubspot_b"]}}
    with _two_portals(db_url, tmp_path, rules, n=40) as (hub, a_store, b_store, _cfg):
        _sync(hub, "hubspot_a")
        _sync(hub, "hubspot_b")
        b_store.archive("contacts", [_cid(3)])
        a_store.archive("contacts", [_cid(5)])
        _sync(hub, "hubspot_b")
        _sync(hub, "hubspot_a")
        minor = _contact_by_email(hub, a_store.raw("contacts", 3)["email"])
        primary = _contact_by_email(hub, a_store.raw("contacts", 5)["email"])
        assert minor["archived_at"] is None, "a delete from a minor source never archives"
        assert primary["archived_at"] is not None, "the primary system's delete archives, though B still links it"
        with hub.db.connect() as c:
            reasons = dict(c.execute(select(change_log.c.entity_id, change_log.c.fields).where(
                change_log.c.op.in_(["unlink", "archive"]))).all())
        assert reasons[minor["id"]]["_reason"] == \
            "hubspot_b is not the primary system of contact (hubspot_a is): unlinked only"
        assert reasons[primary["id"]]["_reason"] == "hubspot_a is the primary system of contact (contact.*: priority)"


# -- the page writer directly: identity inside a page, ambiguity, guards -----------------------------

CONTACT_MAPPING = """
streams:
  people:
    target: contact
    fields:
      email: {path: email, transform: email}
      phone: {path: phone, transform: phone}
      first_name: first
  orgs:
    target: account
    fields:
      name: {path: name, transform: trim}
      domain: {path: domain, transform: [trim, lower]}
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: so that record times do not matter here: src_a first, an empty value never overwrites
WRITER_RULES = {"contact.*": {"rule": "priority", "systems": ["src_a", "src_b"]},
                "account.*": {"rule": "priority", "systems": ["src_a", "src_b"]}}


def _write(db_url: str, connector: str, stream: str, records: list[dict[str, Any]], at: datetime = T0,
           deleted: list[str] | None = None) -> None:
    mapping = parse_mapping(CONTACT_MAPPING, "test.yaml")[stream]
    writer = PageWriter(connector, stream, mapping, parse_rules(WRITER_RULES))
    raws = [RawRecord(external_id=r.pop("id"), updated_at=at.isoformat(), data=r) for r in records]
    eng = make_engine(db_url)
    try:
        with eng.connect() as conn, conn.begin():
            batch = Batch(conn)
            writer.write(batch, writer.prepare(raws), deleted or [], at, None)
            batch.flush()
    finally:
        eng.dispose()


def _rows(db_url: str, table: Any) -> list[dict[str, Any]]:
    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            return [dict(r) for r in c.execute(select(table).order_by(table.c.id)).mappings()]
    finally:
        eng.dispose()


def _log(db_url: str) -> list[dict[str, Any]]:
    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            return [dict(r) for r in c.execute(select(change_log).order_by(change_log.c.seq)).mappings()]
    finally:
        eng.dispose()


def test_one_page_with_one_email_twice_makes_one_entity(db_url: str) -> None:
    _write(db_url, "src_a", "people", [{"id": "1", "email": "Ann@Example.com", "first": "Ann"},
                                       {"id": "2", "email": "ann@example.com ", "phone": "+1 212 555 0100"}])
    (ann,) = _rows(db_url, contacts)
    assert (ann["email"], ann["first_name"], ann["phone"]) == ("ann@example.com", "Ann", "+12125550100")
    ops = [(r["op"], r["fields"].get("_match")) for r in _log(db_url)]
    assert ops == [("create", None), ("link", "matched on email 'ann@example.com'")]
    # a second source with a differently cased address links to it as well (and ranks below)
    _write(db_url, "src_b", "people", [{"id": "x9", "email": "ANN@example.COM", "first": "Annie"}],
           at=T0 + timedelta(days=1))
    (ann,) = _rows(db_url, contacts)
    assert ann["first_name"] == "Ann"
    last = _log(db_url)[-1]
    assert (last["op"], last["fields"]["_rejected"]["first_name"]) == (
        "link", {"value": "Annie", "rule": "priority", "reason": "src_b ranks below src_a"})


def test_a_page_sent_in_parts_is_one_page(db_url: str) -> None:
    """PostgreSQL gets a page's entity writes in parts while the rest is merged (SEND_EVERY): an
    entity made in one part and matched again in a later one ends as one row with both records'
    values, and the page's change log is whole."""
    from hub.writer import SEND_EVERY

    k = SEND_EVERY + 5  # second copies land in the second and third parts
    people = [{"id": f"a{i}", "email": f"p{i}@example.com", "first": f"P{i}"} for i in range(k)]
    people += [{"id": f"b{i}", "email": f"P{i}@example.com", "phone": f"+1 212 555 {i:04d}"} for i in range(k)]
    _write(db_url, "src_a", "people", people)
    rows = _rows(db_url, contacts)
    assert len(rows) == k
    assert {(r["email"], r["first_name"], r["phone"]) for r in rows} == {
        (f"p{i}@example.com", f"P{i}", f"+1212555{i:04d}") for i in range(k)}
    assert Counter(r["op"] for r in _log(db_url)) == {"create": k, "link": k}
    eng = make_engine(db_url)
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(external_links)).scalar_one() == 2 * k
    eng.dispose()


def test_a_value_or_id_longer_than_its_column_is_the_records_failure(db_url: str) -> None:
    mapping = parse_mapping(CONTACT_MAPPING, "test.yaml")["orgs"]
    writer = PageWriter("src_a", "orgs", mapping, parse_rules(WRITER_RULES))
    prepared = writer.prepare([RawRecord("1", None, {"name": "Ok", "domain": "ok.example"}),
                               RawRecord("2", None, {"name": "Long", "domain": "x" * 300 + ".example"})])
    assert [r.external_id for r, _m in prepared.mapped] == ["1"]
    (f,) = prepared.failures
    assert f["external_id"] == "2" and f["payload"]["name"] == "Long"
    assert f["reason"] == "mapping failed: domain is 308 characters long; account.domain holds at most 255"
    # an id longer than the hub keeps: queued dead at once, under a shortened unique key
    long_ids = ["7" * 300, "7" * 299 + "8"]
    prepared = writer.prepare([RawRecord(x, None, {"name": "Long id"}) for x in long_ids])
    assert not prepared.mapped and "the record's id is 300 characters long" in prepared.failures[0]["reason"]
    eng = make_engine(db_url)
    with eng.begin() as c:
        repos.record_failures(c, "src_a", "orgs", prepared.failures, T0, timedelta(minutes=5), 5)
    with eng.connect() as c:
        queued = c.execute(select(retry_queue.c.external_id, retry_queue.c.dead)).all()
    eng.dispose()
    assert len({q[0] for q in queued}) == 2 and all(len(q[0]) <= 255 and q[1] for q in queued)


@pytest.mark.postgres
def test_a_part_the_server_refuses_fails_the_whole_page(pg_only_url: str) -> None:
    import psycopg

    from hub.writer import SEND_EVERY

    def orgs() -> list[dict[str, Any]]:
        return [{"id": f"a{i}", "name": f"Org {i}", "domain": f"org{i}.example"} for i in range(2 * SEND_EVERY)]

    page = orgs()
    # longer than accounts.domain, and let through (the writer's own check off): refused by the
    # server in the first part, never truncated
    page[3]["domain"] = "x" * 300 + ".example"
    writer = PageWriter("src_a", "orgs", parse_mapping(CONTACT_MAPPING, "test.yaml")["orgs"], parse_rules(WRITER_RULES))
    writer.limits = []
    eng = make_engine(pg_only_url)
    with pytest.raises(psycopg.errors.StringDataRightTruncation), eng.connect() as conn, conn.begin():
        batch = Batch(conn)
        writer.write(batch, writer.prepare([RawRecord(r.pop("id"), T0.isoformat(), r) for r in page]), [], T0, None)
        batch.flush()
    eng.dispose()
    assert _rows(pg_only_url, accounts) == [] and _log(pg_only_url) == []
    _write(pg_only_url, "src_a", "orgs", orgs()[:3])  # the connection left pipeline mode: it works
    assert len(_rows(pg_only_url, accounts)) == 3


def test_ambiguous_match_links_to_the_oldest_and_says_so(db_url: str) -> None:
    # two canonical contacts with one email (made by one source that allows duplicates, in two pages)
    _write(db_url, "src_a", "people", [{"id": "1", "email": "dup@example.com", "first": "Old"}])
    eng = make_engine(db_url)
    with eng.begin() as c:  # a second one, younger, as the CRM itself might hold
        c.execute(contacts.insert().values(id="zzzz", email="DUP@example.com", first_name="Young",
                                           created_at=T0 + timedelta(days=3)))
        c.execute(contacts.update().where(contacts.c.id != "zzzz").values(created_at=T0))
    eng.dispose()
    _write(db_url, "src_b", "people", [{"id": "b1", "email": "dup@example.com", "phone": "+44 20 7946 0000"}])
    rows = {r["first_name"]: r for r in _rows(db_url, contacts)}
    assert rows["Old"]["phone"] == "+442079460000" and rows["Young"]["phone"] is None
    note = _log(db_url)[-1]["fields"]["_match"]
    assert note == (f"matched on email 'dup@example.com'; 2 canonical records share it, "
                    f"linked to the oldest ({rows['Old']['id']})")


def test_weaker_keys_never_join_records_whose_stronger_keys_differ(db_url: str) -> None:
    _write(db_url, "src_a", "people", [{"id": "1", "email": "a@example.com", "phone": "+1 212 555 0100"},
                                       {"id": "2", "phone": "+1 646 555 0199", "first": "NoMail"}])
    # same phone, another email: another person; same phone, no email: the same one
    _write(db_url, "src_b", "people", [{"id": "b1", "email": "b@example.com", "phone": "+1 212 555 0100"},
                                       {"id": "b2", "phone": "+1 (212) 555-0100"},
                                       {"id": "b3", "phone": "+1-646-555-0199", "email": "late@example.com"}])
    rows = _rows(db_url, contacts)
    assert len(rows) == 3
    by_email = {r["email"]: r for r in rows}
    assert set(by_email) == {"a@example.com", "b@example.com", "late@example.com"}
    assert by_email["late@example.com"]["first_name"] == "NoMail", "a phone match fills a record without email"
    matches = [r["fields"].get("_match") for r in _log(db_url) if r["source"] == "src_b"]
    assert matches[0] is None  # b1: created
    assert matches[1].startswith("matched on phone '+12125550100'; 2 canonical records share it")  # b2
    assert matches[2] == "matched on phone '+16465550199'"  # b3
    # accounts: same name with another domain is another company; a name alone matches
    _write(db_url, "src_a", "orgs", [{"id": "c1", "name": "Acme Inc.", "domain": "acme.com"}])
    _write(db_url, "src_b", "orgs", [{"id": "d1", "name": "ACME  inc.", "domain": "acme.io"},
                                     {"id": "d2", "name": "acme inc."},
                                     {"id": "d3", "name": "Other", "domain": "https://www.Acme.com/"}])
    names = sorted((r["name"], r["domain"]) for r in _rows(db_url, accounts))
    assert len(names) == 2 and ("ACME  inc.", "acme.io") in names


def test_match_key_normalisers() -> None:
    assert norm_email(" Mailto:Ann@Example.COM ") == "ann@example.com" and norm_email("nope") is None
    # one number written five ways is one E.164 number (national forms in the default region, US)
    ways = ["(212) 555-0100", "212.555.0100", "+1 212 555 0100", "001 212 555 0100", "tel:+1-212-555-0100"]
    assert {norm_phone(w) for w in ways} == {"+12125550100"}
    assert norm_phone("0044 20 7946 0958") == "+442079460958" and norm_phone("+44 (0)20 7946 0958") == "+442079460958"
    assert norm_phone("ext") is None and norm_phone("12") is None
    assert norm_domain("HTTPS://www.Acme.com/about?x=1") == "acme.com" and norm_domain(" ") is None
    assert norm_name("  Acme   Inc. ") == "acme inc."


@settings(max_examples=300, deadline=None)
@given(incoming=st.dictionaries(st.sampled_from(["phone", "lifecycle_stage", "title", "first_name", "email"]),
                                st.one_of(st.none(), st.just(""), st.text(max_size=2))),
       system=st.sampled_from(["hubspot_a", "hubspot_b", "crm"]),
       at=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))))
def test_first_is_merge_into_an_empty_record(incoming: dict[str, Any], system: str, at: datetime | None) -> None:
    """The writer's fast path for new entities decides exactly as `merge` against nothing."""
    m = Merger(parse_rules(ISSUE_RULES), "contact")
    full, quick = m.merge({}, {}, incoming, system, at), m.first(incoming, system, at)
    assert quick.values == full.values and quick.provenance == full.provenance
    assert quick.decisions == [d for d in full.decisions if not d.accepted]
    assert set(quick.values) == {d.field for d in full.decisions if d.accepted}


@pytest.mark.postgres
def test_concurrent_pages_of_two_sources_make_one_person(pg_only_url: str) -> None:
    """Two workers (two connectors) write the same new person at once: the identity lock makes
    the second wait for the first page's commit, then match it, instead of creating a twin."""
    import threading

    mapping = parse_mapping(CONTACT_MAPPING, "test.yaml")["people"]
    eng = make_engine(pg_only_url)
    first_written = threading.Event()

    def page(connector: str, ext: str, hold: float) -> None:
        writer = PageWriter(connector, "people", mapping, parse_rules(WRITER_RULES))
        raws = [RawRecord(external_id=ext, updated_at=T0.isoformat(), data={"email": "twin@example.com"})]
        with eng.connect() as conn, conn.begin():
            batch = Batch(conn)
            writer.write(batch, writer.prepare(raws), [], T0, None)
            batch.flush()
            first_written.set()
            threading.Event().wait(hold)  # still uncommitted: the other page must wait for it

    a = threading.Thread(target=page, args=("src_a", "a1", 0.5))
    a.start()
    assert first_written.wait(10)
    page("src_b", "b1", 0)
    a.join()
    try:
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(contacts)).scalar_one() == 1
            assert c.execute(select(func.count()).select_from(external_links)).scalar_one() == 2
    finally:
        eng.dispose()
