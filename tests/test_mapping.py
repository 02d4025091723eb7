"""Mapping: transforms, paths, references, and load-time errors with file, line and key."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.mapping import MappingLoadError, load_mappings, parse_mapping
from hub.transforms import MappingError, build_transform


@pytest.mark.parametrize(("name", "given", "want"), [
    ("trim", "  a  ", "a"),
    ("trim", "   ", None),
    ("lower", "AbC", "abc"),
    ("email", " Ada@Example.COM ", "ada@example.com"),
    ("email", "mailto:x@y.io", "x@y.io"),
    ("phone", "+1 (415) 555-1212", "+14155551212"),
    ("phone", "0044 20 7946 0958", "+442079460958"),
    ("timestamp", "2019-10-30T03:30:17.883Z", datetime(2019, 10, 30, 3, 30, 17, 883000, tzinfo=UTC)),
    ("timestamp", "1572406217883", datetime(2019, 10, 30, 3, 30, 17, 883000, tzinfo=UTC)),
    ("timestamp", 1572406217, datetime(2019, 10, 30, 3, 30, 17, tzinfo=UTC)),
    ("timestamp", "2019-10-30T05:30:17+02:00", datetime(2019, 10, 30, 3, 30, 17, tzinfo=UTC)),
    ("date", "2024-02-29", date(2024, 2, 29)),
    ("date", "2024-02-29T23:00:00Z", date(2024, 2, 29)),
    ("decimal", "12.50", Decimal("12.50")),
    ("int", "42", 42),
    ("bool", "Yes", True),
    ("email", None, None),
])
def test_transforms(name: str, given: object, want: object) -> None:
    assert build_transform(name)(given) == want


@pytest.mark.parametrize(("name", "given"), [
    ("email", "not-an-email"), ("phone", "call me"), ("timestamp", "yesterday-ish"),
    ("decimal", "12,5,0"), ("int", "4.2"), ("bool", "maybe"),
])
def test_transforms_reject_bad_values(name: str, given: str) -> None:
    with pytest.raises(MappingError, match="not a"):
        build_transform(name)(given)


def test_value_map_and_default() -> None:
    country = build_transform({"map": {"US": "US", "USA": "US", "United States": "US"}})
    assert country("united states") == "US"
    with pytest.raises(MappingError) as err:
        country("Mars")
    assert str(err.value) == ("value 'Mars' is not in the value map (known: united states, us, usa). "
                              'Fix: add it to the map, or a `"*"` entry for every other value')
    # "*": every other value becomes it; "*": "*" keeps the value as sent
    assert build_transform({"map": {"US": "US", "*": "other"}})("Mars") == "other"
    assert build_transform({"map": {"US": "US", "*": None}})("Mars") is None
    keep = build_transform({"map": {"USA": "US", "*": "*"}})
    assert (keep(" usa "), keep(" Mars ")) == ("US", "Mars")
    assert build_transform({"default": "USD"})(None) == "USD"
    assert build_transform({"constant": "x"})("y") == "x"


def test_packaged_hubspot_mapping_maps_a_documented_record() -> None:
    m = load_mappings(None).stream("hubspot_main", "hubspot", "contacts")
    rec = m.map({"id": "512", "properties": {"email": " Bh@HubSpot.com", "firstname": "Brian ",
                                             "createdate": "2019-10-30T03:30:17.883Z",
                                             "associatedcompanyid": "77"}})
    assert rec.values["email"] == "bh@hubspot.com"
    assert rec.values["first_name"] == "Brian"
    assert rec.refs == {"account_id": "77"}
    assert "properties.email" in m.paths


def test_list_index_path_and_custom_fields() -> None:
    streams = parse_mapping(
        "streams:\n  deals:\n    target: opportunity\n    fields:\n      name: properties.dealname\n"
        "    references:\n      account_id: {path: 'associations.companies.results[0].id', entity: account}\n"
        "    custom:\n      score: {path: properties.score, transform: int}\n", "x.yaml")
    rec = streams["deals"].map({"properties": {"dealname": "D", "score": "7"},
                                "associations": {"companies": {"results": [{"id": "9"}]}}})
    assert rec.refs == {"account_id": "9"}
    assert rec.custom == {"score": 7}


@pytest.mark.parametrize(("yaml_text", "line", "key", "message"), [
    ("streams:\n  contacts:\n    target: contakt\n", 3, "streams.contacts.target", "unknown target 'contakt'"),
    ("streams:\n  contacts:\n    target: contact\n    fields:\n      emial: properties.email\n", 5,
     "streams.contacts.fields.emial", "contact has no field 'emial'"),
    ("streams:\n  contacts:\n    target: contact\n    fields:\n      email: {path: properties.email, transform: lowr}\n",
     5, "streams.contacts.fields.email", "unknown transform 'lowr'"),
    ("streams:\n  contacts:\n    target: contact\n    fields:\n      email: {path: 'properties..email'}\n",
     5, "streams.contacts.fields.email", "bad path"),
    ("streams:\n  contacts:\n    target: contact\n    fields:\n      id: properties.hs_object_id\n",
     5, "streams.contacts.fields.id", "contact has no field 'id'"),
])
def test_mapping_errors_name_file_line_and_key(yaml_text: str, line: int, key: str, message: str) -> None:
    with pytest.raises(MappingLoadError) as exc:
        parse_mapping(yaml_text, "mappings/hubspot.yaml")
    assert exc.value.line == line
    assert exc.value.key == key
    assert str(exc.value).startswith(f"mappings/hubspot.yaml:{line}: {key}: ")
    assert message in str(exc.value)


def test_user_mapping_beside_config_wins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "hubspot.yaml").write_text(
        "streams:\n  contacts:\n    target: contact\n    fields:\n      title: properties.favourite_title\n")
    m = load_mappings(tmp_path).stream("hubspot_main", "hubspot", "contacts")
    assert m.map({"properties": {"favourite_title": "CTO"}}).values == {"title": "CTO"}


# -- transforms added with the mapping engine (issue 4) ------------------------------------------

def test_phone_transform_gives_e164_with_a_region() -> None:
    from hub.transforms import build_transform, phone

    assert phone("(415) 555-0100") == "+14155550100" and phone("4155550100 ext. 12") == "+14155550100"
    assert build_transform({"phone": "GB"})("020 7946 0958") == "+442079460958"
    with pytest.raises(MappingError, match="not a phone number"):
        phone("call me")
    with pytest.raises(TypeError, match="region code"):
        build_transform({"phone": "Narnia"})


@given(st.integers(200, 999), st.integers(200, 999), st.integers(0, 9999),
       st.sampled_from(["+1 ({a}) {b}-{c:04d}", "({a}) {b} {c:04d}", "{a}.{b}.{c:04d}", "+1{a}{b}{c:04d}",
                        "1-{a}-{b}-{c:04d}", "+1 {a} {b} {c:04d} x12"]))
def test_north_american_fast_paths_agree_with_phonenumbers(a: int, b: int, c: int, form: str) -> None:
    """(`001 415 ...` is left out on purpose: 00 is not the US exit code, so phonenumbers reads it
    as part of a national number; the hub reads it as `+`, as people who write it mean.)"""
    import phonenumbers

    from hub.transforms import e164

    text = form.format(a=a, b=b, c=c)
    n = phonenumbers.parse(text, "US")
    expected = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    assert e164(text, "US") == expected


def test_a_trunk_prefix_in_brackets_is_dropped() -> None:
    from hub.transforms import e164

    assert e164("+44 (0)20 7946 0958") == "+442079460958"


def test_minor_units_use_the_currency_exponent() -> None:
    from decimal import Decimal

    from hub.transforms import minor_units

    assert minor_units([1999, "usd"]) == Decimal("19.99")
    assert minor_units([1999, "JPY"]) == Decimal("1999")  # zero-decimal
    assert minor_units([1999, "kwd"]) == Decimal("1.999")  # three-decimal
    assert minor_units([None, "usd"]) is None
    with pytest.raises(MappingError, match="no currency"):
        minor_units([100, None])
    with pytest.raises(MappingError, match="ISO 4217"):
        minor_units([100, "dollars"])


def test_list_paths_concat_and_minor_units_in_a_mapping() -> None:
    m = parse_mapping(
        "streams:\n"
        "  deals:\n"
        "    target: opportunity\n"
        "    fields:\n"
        "      name: {path: [properties.company, properties.product], transform: {concat: ' - '}}\n"
        "      amount: {path: [amount, currency], transform: minor_units}\n"
        "      currency: {path: currency, transform: upper}\n", "m.yaml")["deals"]
    out = m.map({"properties": {"company": "Acme", "product": None}, "amount": 500, "currency": "jpy"})
    assert out.values == {"name": "Acme", "amount": 500, "currency": "JPY"}


@pytest.mark.parametrize(("field", "spec", "message"), [
    ("created_at", "properties.createdate", "type mismatch: contact.created_at is timestamp, the mapping gives a raw "
                                            "vendor value. Fix: end the transform chain with `timestamp`"),
    ("first_name", "{path: x, transform: timestamp}", "type mismatch: contact.first_name is text"),
    ("email", "{path: [a, b], transform: email}", None),
    ("email", "{path: {a: b}}", "bad path"),
])
def test_type_mismatches_fail_at_load_with_file_line_and_key(field: str, spec: str, message: str | None) -> None:
    text = f"streams:\n  contacts:\n    target: contact\n    fields:\n      {field}: {spec}\n"
    if message is None:
        parse_mapping(text, "mappings/x.yaml")
        return
    with pytest.raises(MappingLoadError) as err:
        parse_mapping(text, "mappings/x.yaml")
    assert str(err.value).startswith(f"mappings/x.yaml:5: streams.contacts.fields.{field}: ")
    assert message in str(err.value)


def test_a_mapping_mistake_is_named_before_any_sync_and_fails_its_streams_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`connectors check` loads the mappings (no vendor read needed to find a typo), and a sync
    of the broken stream fails with the file, line and key, not a traceback per stream."""
    import yaml
    from typer.testing import CliRunner

    from hub.cli import app as cli_app

    export = tmp_path / "export"
    export.mkdir()
    (export / "people.csv").write_text("id,email,updated_on\n1,ann@example.com,2026-01-01\n", encoding="utf-8")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "files.yaml").write_text(
        "streams:\n  contacts:\n    target: contact\n    fields:\n"
        "      email: {path: email, transform: lowr}\n", encoding="utf-8")
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(yaml.safe_dump({
        "database": f"sqlite:///{tmp_path / 'hub.db'}",
        "connectors": {"files": {"kind": "legacy_csv", "path": str(export),
                                 "streams": {"contacts": {"file": "people.csv", "key": "id"}}}},
    }))
    runner = CliRunner()
    where = f"{tmp_path / 'mappings' / 'files.yaml'}:5: streams.contacts.fields.email: unknown transform 'lowr'."
    res = runner.invoke(cli_app, ["--config", str(cfg), "connectors", "check"])
    assert res.exit_code == 1, res.output
    text = "".join(res.output.splitlines())  # rich wraps long lines
    assert "ok   files:" in text  # the source itself answers
    assert f"fail files: mapping: {where}" in text
    assert "Fix: use one of" in text and text.count("phone,") == 1  # each transform named once

    assert runner.invoke(cli_app, ["--config", str(cfg), "db", "upgrade"]).exit_code == 0
    res = runner.invoke(cli_app, ["--config", str(cfg), "sync", "run", "--json"])
    assert res.exit_code != 0
    (stream,) = __import__("json").loads(res.stdout)["streams"]
    assert stream["status"] == "failed" and stream["error"].startswith(str(tmp_path / "mappings" / "files.yaml") + ":5:")
    assert "Traceback" not in res.output


def test_the_readme_mapping_example_loads_and_maps() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("Per stream:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    m = parse_mapping(block, "README.md")["contacts"]
    rec = m.map({"properties": {"email": "A@B.co", "phone": "020 7946 0958", "lastname": "Lee", "firstname": "Ann",
                                "middlename": "M", "associatedcompanyid": "9", "hs_score": "7", "country": "Mars"}})
    assert rec.values == {"email": "a@b.co", "phone": "+442079460958", "last_name": "Lee", "first_name": "Ann M"}
    assert rec.refs == {"account_id": "9"} and rec.custom == {"score": 7, "country": "Mars"}
