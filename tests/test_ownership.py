"""Per-field source of truth: each rule by example, the documented YAML as written, properties
(order independence, owner exclusivity, fill_empty, determinism) and validation messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.config import ConfigError, parse_config
from hub.ownership import (
    DEFAULT_RULE,
    Decision,
    Merger,
    Rules,
    archive_on_delete,
    delete_outcome,
    load_default_rules,
    load_rules,
    parse_rules,
)

DOC_YAML = """\
ownership:
  contact.phone: {rule: owner, system: hubspot_a}
  contact.lifecycle_stage: {rule: priority, systems: [hubspot_b, hubspot_a]}
  contact.title: {rule: fill_empty}
  contact.*: {rule: most_recent}
"""

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def rules() -> Rules:
    return parse_rules(yaml.safe_load(DOC_YAML)["ownership"], "crmhub.yaml")


@pytest.fixture
def contact(rules: Rules) -> Merger:
    return Merger(rules, "contact")


# -- the documented shape ----------------------------------------------------------------------


def test_documented_shape_parses_as_written(rules: Rules) -> None:
    assert rules.rule_for("contact", "phone").rule == "owner"
    assert rules.rule_for("contact", "phone").system == "hubspot_a"
    assert rules.rule_for("contact", "lifecycle_stage").systems == ("hubspot_b", "hubspot_a")
    assert rules.rule_for("contact", "title").rule == "fill_empty"
    assert rules.rule_for("contact", "email").rule == "most_recent"  # the wildcard


def test_documented_shape_through_crmhub_yaml() -> None:
    cfg = parse_config({"connectors": {"hubspot_a": {"kind": "hubspot"}, "hubspot_b": {"kind": "hubspot"}},
                        **yaml.safe_load(DOC_YAML)})
    rules = load_rules(cfg.ownership, systems=cfg.connectors)
    assert rules.rule_for("contact", "phone").system == "hubspot_a"
    assert rules.rule_for("account", "name").rule == "most_recent"  # a shipped default


def test_specific_key_beats_wildcard_and_default_applies_elsewhere() -> None:
    rules = parse_rules({"contact.*": {"rule": "fill_empty"}, "contact.email": {"rule": "owner", "system": "crm"}})
    assert rules.rule_for("contact", "email").rule == "owner"
    assert rules.rule_for("contact", "phone").rule == "fill_empty"
    assert rules.rule_for("account", "name") is DEFAULT_RULE
    assert rules.rule_for("lead", "email").rule == "most_recent"


def test_user_rules_override_defaults_key_by_key() -> None:
    defaults = load_default_rules()
    assert set(defaults.by_key) == {"account.*", "contact.*", "lead.*", "opportunity.*"}
    rules = load_rules({"contact.*": {"rule": "priority", "systems": ["crm"]}})
    assert rules.rule_for("contact", "phone").rule == "priority"
    assert rules.rule_for("lead", "phone").rule == "most_recent"
    assert load_rules(None).by_key == defaults.by_key


# -- owner -------------------------------------------------------------------------------------


def test_owner_rejects_other_systems_with_reason(contact: Merger) -> None:
    r = contact.merge({"phone": "+15550001"}, {}, {"phone": "+15550002"}, "hubspot_b", t(5))
    assert r.values == {} and r.provenance == {}
    assert r.decisions == [Decision("phone", False, "owner", "hubspot_a owns this field", "+15550001", "+15550002")]


def test_owner_writes_and_may_clear(contact: Merger) -> None:
    r = contact.merge({"phone": "+15550001"}, {"phone": ("hubspot_a", t(0))}, {"phone": None}, "hubspot_a", t(5))
    assert r.values == {"phone": None}
    assert r.provenance == {"phone": ("hubspot_a", t(5), "owner")}
    assert r.decisions[0].accepted


def test_owner_ignores_its_own_older_replay(contact: Merger) -> None:
    r = contact.merge({"phone": "+15550002"}, {"phone": ("hubspot_a", t(5))}, {"phone": "+15550001"},
                      "hubspot_a", t(1))
    assert r.values == {}
    assert r.decisions[0].reason == "hubspot_a owns this field; older than the stored change from hubspot_a"


def test_owner_confirming_a_value_takes_provenance_without_decision(contact: Merger) -> None:
    r = contact.merge({"phone": "+15550001"}, {"phone": ("hubspot_b", t(9))}, {"phone": "+15550001"},
                      "hubspot_a", t(1))
    assert r.values == {} and r.decisions == []
    assert r.provenance == {"phone": ("hubspot_a", t(1), "owner")}


def test_crm_as_owner() -> None:
    m = Merger(parse_rules({"contact.owner_id": {"rule": "owner", "system": "crm"}}), "contact")
    assert m.merge({"owner_id": "u1"}, {}, {"owner_id": "u2"}, "hubspot_a", t(1)).values == {}
    r = m.merge({"owner_id": "u1"}, {}, {"owner_id": "u2"}, "crm", None)
    assert r.values == {"owner_id": "u2"}
    assert r.provenance == {"owner_id": ("crm", None, "owner")}


# -- priority ----------------------------------------------------------------------------------


def test_priority_higher_system_wins(contact: Merger) -> None:
    cur = {"lifecycle_stage": "lead"}
    r = contact.merge(cur, {"lifecycle_stage": ("hubspot_a", t(9))}, {"lifecycle_stage": "customer"},
                      "hubspot_b", t(1))
    assert r.values == {"lifecycle_stage": "customer"}
    assert r.decisions[0].reason == "hubspot_b ranks above hubspot_a"
    r = contact.merge({"lifecycle_stage": "customer"}, {"lifecycle_stage": ("hubspot_b", t(1))},
                      {"lifecycle_stage": "lead"}, "hubspot_a", t(9))
    assert r.values == {}
    assert r.decisions[0] == Decision("lifecycle_stage", False, "priority", "hubspot_a ranks below hubspot_b",
                                      "customer", "lead")


def test_priority_lower_system_writes_only_while_higher_has_no_value(contact: Merger) -> None:
    r = contact.merge({}, {}, {"lifecycle_stage": "lead"}, "hubspot_a", t(1))
    assert r.values == {"lifecycle_stage": "lead"}
    # the higher system has no value: its empty write is rejected, the lower value stays
    r = contact.merge({"lifecycle_stage": "lead"}, {"lifecycle_stage": ("hubspot_a", t(1))},
                      {"lifecycle_stage": None}, "hubspot_b", t(5))
    assert r.values == {}
    assert r.decisions[0].reason == "an empty value never overwrites under priority"


def test_priority_unlisted_systems_rank_below_listed_and_crm_is_a_system() -> None:
    m = Merger(parse_rules({"account.segment": {"rule": "priority", "systems": ["crm", "salesforce"]}}), "account")
    r = m.merge({"segment": "smb"}, {"segment": ("salesforce", t(0))}, {"segment": "ent"}, "stripe_main", t(9))
    assert r.values == {} and r.decisions[0].reason == "stripe_main ranks below salesforce"
    r = m.merge({"segment": "smb"}, {"segment": ("salesforce", t(0))}, {"segment": "ent"}, "crm", None)
    assert r.values == {"segment": "ent"}
    # two unlisted systems rank alike: the newer change decides
    r = m.merge({"segment": "smb"}, {"segment": ("stripe_main", t(0))}, {"segment": "mid"}, "aircall", t(3))
    assert r.values == {"segment": "mid"}
    assert r.decisions[0].reason == "same rank as stripe_main; newer than the stored change from stripe_main"
    r = m.merge({"segment": "smb"}, {"segment": ("stripe_main", t(3))}, {"segment": "mid"}, "aircall", t(3))
    assert r.values == {"segment": "mid"}
    assert r.decisions[0].reason == "same rank as stripe_main; same vendor time as stripe_main; aircall sorts first"


# -- most_recent -------------------------------------------------------------------------------


def test_most_recent_newer_wins_older_rejected(contact: Merger) -> None:
    cur, prov = {"email": "a@x.io"}, {"email": ("hubspot_a", t(5))}
    assert contact.merge(cur, prov, {"email": "b@x.io"}, "hubspot_b", t(6)).values == {"email": "b@x.io"}
    r = contact.merge(cur, prov, {"email": "b@x.io"}, "hubspot_b", t(4))
    assert r.values == {} and r.decisions[0].reason == "older than the stored change from hubspot_a"


def test_most_recent_tie_goes_to_the_name_that_sorts_first(contact: Merger) -> None:
    r = contact.merge({"email": "b@x.io"}, {"email": ("hubspot_b", t(5))}, {"email": "a@x.io"}, "hubspot_a", t(5))
    assert r.values == {"email": "a@x.io"}
    assert r.decisions[0].reason == "same vendor time as hubspot_b; hubspot_a sorts first"
    r = contact.merge({"email": "a@x.io"}, {"email": ("hubspot_a", t(5))}, {"email": "b@x.io"}, "hubspot_b", t(5))
    assert r.values == {}
    assert r.decisions[0].reason == "same vendor time as hubspot_a; hubspot_a sorts first"


def test_most_recent_untimed_is_older_than_any_timed(contact: Merger) -> None:
    r = contact.merge({"email": "a@x.io"}, {"email": ("hubspot_a", t(-10_000))}, {"email": "b@x.io"},
                      "legacy_csv", None)
    assert r.values == {}
    assert r.decisions[0].reason == "no vendor time, and the stored value from hubspot_a has one"
    r = contact.merge({"email": "b@x.io"}, {"email": ("legacy_csv", None)}, {"email": "a@x.io"}, "hubspot_a", t(0))
    assert r.values == {"email": "a@x.io"}


def test_unknown_provenance_is_the_weakest_claim(contact: Merger) -> None:
    r = contact.merge({"email": "a@x.io"}, {"email": None}, {"email": "b@x.io"}, "legacy_csv", None)
    assert r.values == {"email": "b@x.io"}
    assert r.provenance == {"email": ("legacy_csv", None, "most_recent")}


def test_per_field_vendor_times(contact: Merger) -> None:
    cur = {"email": "a@x.io", "first_name": "Ann"}
    prov = {"email": ("hubspot_a", t(5)), "first_name": ("hubspot_a", t(5))}
    r = contact.merge(cur, prov, {"email": "b@x.io", "first_name": "Anne"}, "hubspot_b", t(9),
                      field_times={"email": t(1)})
    assert r.values == {"first_name": "Anne"}
    assert r.provenance == {"first_name": ("hubspot_b", t(9), "most_recent")}


# -- fill_empty --------------------------------------------------------------------------------


def test_fill_empty(contact: Merger) -> None:
    assert contact.merge({"title": ""}, {}, {"title": "CTO"}, "hubspot_b", t(1)).values == {"title": "CTO"}
    assert contact.merge({}, {}, {"title": "CTO"}, "crm", None).values == {"title": "CTO"}
    r = contact.merge({"title": "CEO"}, {}, {"title": "CTO"}, "hubspot_b", t(1))
    assert r.values == {} and r.decisions[0].reason == "the field already has a value"
    # nothing to fill with: no write at all
    assert contact.merge({"title": None}, {}, {"title": ""}, "hubspot_b", t(1)) == ({}, {}, [])


# -- a whole record ----------------------------------------------------------------------------


def test_a_record_is_decided_field_by_field(contact: Merger) -> None:
    current = {"email": "ann@x.io", "phone": "+15550001", "title": "CEO", "lifecycle_stage": "lead",
               "first_name": "Ann"}
    prov = dict.fromkeys(current, ("hubspot_a", t(0)))
    incoming = {"email": "ann@x.io", "phone": "+15559999", "title": "CTO", "lifecycle_stage": "customer",
                "first_name": "Anne"}
    r = contact.merge(current, prov, incoming, "hubspot_b", t(3))
    assert r.values == {"lifecycle_stage": "customer", "first_name": "Anne"}
    assert {d.field: d.accepted for d in r.decisions} == {
        "phone": False, "title": False, "lifecycle_stage": True, "first_name": True}
    # the same email from a newer change: provenance moves, no decision
    assert r.provenance["email"] == ("hubspot_b", t(3), "most_recent")
    assert current["first_name"] == "Ann" and prov["email"] == ("hubspot_a", t(0))  # inputs untouched


# -- deletes -----------------------------------------------------------------------------------


def test_delete_by_the_primary_system_archives() -> None:
    rules = parse_rules({"opportunity.*": {"rule": "owner", "system": "salesforce"},
                         "account.*": {"rule": "priority", "systems": ["crm", "hubspot_a"]}})
    assert archive_on_delete(rules, "opportunity", "salesforce", ["hubspot_a"])
    assert not archive_on_delete(rules, "opportunity", "hubspot_a", [])  # a minor source, even the last
    assert archive_on_delete(rules, "account", "crm", ["hubspot_a"])
    ok, why = delete_outcome(rules, "account", "hubspot_a", [])
    assert not ok and why == "hubspot_a is not the primary system of account (crm is): unlinked only"


def test_delete_without_primary_archives_only_the_last_link(rules: Rules) -> None:
    assert not archive_on_delete(rules, "contact", "hubspot_b", ["hubspot_a", "hubspot_b"])
    assert archive_on_delete(rules, "contact", "hubspot_b", ["hubspot_b"])
    assert archive_on_delete(Rules(), "lead", "hubspot_b", [])
    assert delete_outcome(rules, "contact", "hubspot_b", ["hubspot_a"]) == (
        False, "still linked to hubspot_a: unlinked only")


# -- properties --------------------------------------------------------------------------------

SYSTEMS = ["crm", "hubspot_a", "hubspot_b", "legacy_csv", "stripe_main"]
VALUES = st.sampled_from(["a", "b", "c", "", None])
TIMES = st.one_of(st.none(), st.integers(0, 6).map(t))
# a system reports one value per vendor time: writes keyed by (system, vendor_at)
WRITE_SETS = st.dictionaries(st.tuples(st.sampled_from(SYSTEMS), TIMES), VALUES, max_size=8)
PROPERTY_RULES = parse_rules({
    "contact.email": {"rule": "most_recent"},
    "contact.lifecycle_stage": {"rule": "priority", "systems": ["hubspot_b", "crm", "hubspot_a"]},
    "contact.phone": {"rule": "owner", "system": "hubspot_a"},
    "contact.title": {"rule": "fill_empty"},
})
FIELD_OF = {"most_recent": "email", "priority": "lifecycle_stage"}


def _apply(m: Merger, field: str, writes: list[tuple[tuple[str, datetime | None], Any]],
           start: tuple[Any, Any] = (None, None)) -> tuple[Any, Any]:
    value, prov = start
    for (system, at), new in writes:
        r = m.merge({field: value}, {field: prov}, {field: new}, system, at)
        value = r.values.get(field, value)
        prov = r.provenance.get(field, prov)
    return value, prov


def _time_key(system: str, at: datetime | None) -> tuple[Any, ...]:
    # later time first; untimed oldest; at equal times the name that sorts first
    return (at is not None, at or T0, [*(-ord(c) for c in system), 1])


@pytest.mark.parametrize("rule", ["most_recent", "priority"])
@settings(max_examples=300, deadline=None)
@given(data=st.data(), writes=WRITE_SETS)
def test_order_independence(rule: str, data: st.DataObject, writes: dict[tuple[str, Any], Any]) -> None:
    m = Merger(PROPERTY_RULES, "contact")
    field = FIELD_OF[rule]
    items = list(writes.items())
    reference = _apply(m, field, items)
    shuffled = data.draw(st.permutations(items))
    assert _apply(m, field, shuffled) == reference
    # and the result is the strongest claim
    ranks = {"hubspot_b": 3, "crm": 2, "hubspot_a": 1}
    if rule == "priority":
        items = [w for w in items if w[1] not in (None, "")]
    if items:
        (system, at), value = max(items, key=lambda w: (
            ranks.get(w[0][0], 0) if rule == "priority" else 0, *_time_key(*w[0])))
        assert reference == (value, (system, at, rule))
    else:
        assert reference == (None, None)


WRITES = st.lists(st.tuples(st.sampled_from(SYSTEMS), VALUES, TIMES), max_size=12)


@settings(max_examples=300, deadline=None)
@given(start=VALUES, writes=WRITES)
def test_owner_field_is_never_changed_by_another_system(start: Any, writes: list[tuple[str, Any, Any]]) -> None:
    m = Merger(PROPERTY_RULES, "contact")
    value, prov = start, None
    for system, new, at in writes:
        r = m.merge({"phone": value}, {"phone": prov}, {"phone": new}, system, at)
        if system != "hubspot_a":
            assert r.values == {} and r.provenance == {}
            assert all(not d.accepted for d in r.decisions)
        value = r.values.get("phone", value)
        prov = r.provenance.get("phone", prov)


@settings(max_examples=300, deadline=None)
@given(start=VALUES, writes=WRITES)
def test_fill_empty_never_overwrites_a_value(start: Any, writes: list[tuple[str, Any, Any]]) -> None:
    m = Merger(PROPERTY_RULES, "contact")
    value: Any = start
    for system, new, at in writes:
        r = m.merge({"title": value}, {}, {"title": new}, system, at)
        if value not in (None, ""):
            assert "title" not in r.values
        value = r.values.get("title", value)


RECORD = st.fixed_dictionaries({}, optional={f: VALUES for f in ("email", "lifecycle_stage", "phone", "title")})
PROVS = st.dictionaries(st.sampled_from(["email", "lifecycle_stage", "phone", "title"]),
                        st.one_of(st.none(), st.tuples(st.sampled_from(SYSTEMS), TIMES)))


@settings(max_examples=300, deadline=None)
@given(current=RECORD, prov=PROVS, incoming=RECORD, system=st.sampled_from(SYSTEMS), at=TIMES)
def test_merge_is_deterministic(current: dict[str, Any], prov: dict[str, Any], incoming: dict[str, Any],
                                system: str, at: datetime | None) -> None:
    first = Merger(PROPERTY_RULES, "contact").merge(current, prov, incoming, system, at)
    again = Merger(PROPERTY_RULES, "contact")
    again.merge({"email": "warm"}, {}, {"email": "cache"}, "crm", None)
    assert again.merge(current, prov, incoming, system, at) == first
    assert set(first.values) <= set(first.provenance)
    assert {d.field for d in first.decisions if d.accepted} == set(first.values)


# -- validation --------------------------------------------------------------------------------


def _problems(data: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_rules(data, "crmhub.yaml", **kw)
    assert str(exc.value).startswith("crmhub.yaml: invalid configuration:")
    return exc.value.problems


def test_every_problem_named_with_key_and_fix() -> None:
    problems = _problems({
        "contact.phone": {"rule": "owner"},
        "contact.lifecycle_stage": {"rule": "priority"},
        "contact.title": {"rule": "newest"},
        "contacts.email": {"rule": "most_recent"},
        "phone": {"rule": "most_recent"},
        "contact.email": {"rule": "most_recent", "system": "crm"},
        "lead.status": {"rule": "fill_empty", "sytem": "crm"},
        "lead.score": "most_recent",
        "account.name": {"system": "crm"},
    })
    assert problems == [
        "ownership.contact.phone: owner rule names no system. Fix: add `system: <connector instance or crm>`, "
        "for example {rule: owner, system: hubspot_main}",
        "ownership.contact.lifecycle_stage: priority rule lists no systems. Fix: add "
        "`systems: [<first choice>, <second>]`, for example {rule: priority, systems: [hubspot_b, hubspot_a]}",
        "ownership.contact.title: unknown rule 'newest'. Fix: use one of owner, priority, most_recent, fill_empty",
        "ownership.contacts.email: unknown entity 'contacts'. Fix: use `contact.email`",
        "ownership.phone: not a field key. Fix: write `<entity>.<field>` or `<entity>.*`, "
        "for example `contact.phone` or `contact.*`",
        "ownership.contact.email: most_recent takes no systems. Fix: remove `system`",
        "ownership.lead.status: `sytem` is not an option of a rule. Fix: remove it, or check its spelling "
        "(a rule takes `rule`, plus `system` for owner or `systems` for priority)",
        "ownership.lead.score: must be a mapping (got 'most_recent'). Fix: write for example `{rule: most_recent}`",
        "ownership.account.name: names no rule. Fix: add `rule: owner|priority|most_recent|fill_empty`",
    ]


@pytest.mark.parametrize(("rule", "problem"), [
    ({"rule": "owner", "systems": ["crm"]},
     "owner takes one `system`, not `systems`. Fix: write `system: <name>` (or use rule: priority to rank several)"),
    ({"rule": "owner", "system": ["crm", "hubspot_a"]},
     "`system` must be one name (got ['crm', 'hubspot_a']). Fix: write `system: <name>`; "
     "to rank several systems use {rule: priority, systems: [...]}"),
    ({"rule": "priority", "system": "crm"},
     "priority takes `systems` (a list), not `system`. Fix: write `systems: [<first choice>, <second>]`"),
    ({"rule": "priority", "systems": "hubspot_b"},
     "`systems` must be a list of names (got 'hubspot_b'). Fix: write `systems: [<first choice>, <second>]`"),
    ({"rule": "priority", "systems": ["crm", "crm"]},
     "`systems` lists 'crm' twice. Fix: name each system once, first choice first"),
    ({"rule": "owner", "system": "HubSpot A"},
     "`system` 'HubSpot A' is not a system name. Fix: use a connector instance name from crmhub.yaml "
     "`connectors:`, or `crm`"),
    ({"rule": "most-recent"}, "unknown rule 'most-recent'. Fix: use `rule: most_recent`"),
])
def test_rule_problems(rule: dict[str, Any], problem: str) -> None:
    assert _problems({"contact.phone": rule}) == [f"ownership.contact.phone: {problem}"]


def test_systems_and_fields_checked_when_known() -> None:
    problems = _problems({"contact.phone": {"rule": "owner", "system": "hubspot_x"},
                          "contact.phnoe": {"rule": "fill_empty"}},
                         systems=["hubspot_a"], fields={"contact": ["phone", "email"]})
    assert problems == [
        "ownership.contact.phone: names system 'hubspot_x', which is not a connector in crmhub.yaml. "
        "Fix: use `hubspot_a`",
        "ownership.contact.phnoe: contact has no field 'phnoe'. Fix: use `contact.phone`",
    ]
    assert parse_rules({"contact.phone": {"rule": "owner", "system": "crm"}}, systems=[]).by_key


def test_not_a_mapping_and_empty() -> None:
    assert _problems(["contact.*"]) == [
        "ownership: must be a mapping of `<entity>.<field>: {rule: ...}`. "
        "Fix: write for example `contact.*: {rule: most_recent}` under it"]
    assert parse_rules(None).by_key == {} and parse_rules({}).by_key == {}


def test_merger_refuses_unknown_entity(rules: Rules) -> None:
    with pytest.raises(ValueError, match="unknown entity 'ticket'"):
        Merger(rules, "ticket")
